"""What the reference-side scripts (``meta_train_step.py``, ``meta_trajectory.py``, and Meta's side
of ``benchmarks/gpu/cases.py``) share: the MOSE config they start from, the size overrides that
turn it into our model configs, and the conversion of a saved batch into Meta's datapoint.

Runs in the environment made by ``benchmarks/reference/setup_env.sh`` (sam2 1.1.0); imports only
torch at module level (Meta's ``training`` package is imported where it is used), so that the
project's tests can read the overrides without that environment.
"""

from __future__ import annotations

from typing import Any

import torch

MOSE = "configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml"
M = "trainer.model."
# Trunk/neck sizes of configs/sam2.1/sam2.1_hiera_t.yaml (same release), on top of MOSE's b+.
HIERA_T = [
    f"{M}image_encoder.trunk.embed_dim=96",
    f"{M}image_encoder.trunk.num_heads=1",
    f"+{M}image_encoder.trunk.stages=[1,2,7,2]",
    f"+{M}image_encoder.trunk.global_att_blocks=[5,7,9]",
    f"+{M}image_encoder.trunk.window_pos_embed_bkg_spatial_size=[7,7]",
    f"{M}image_encoder.neck.backbone_channel_list=[768,384,192,96]",
]
# The project's `tiny` (= ../shared/golden/tiny/config.yaml): hiera_t with these sizes shrunk.
TINY = [
    *HIERA_T,
    f"{M}image_encoder.trunk.embed_dim=16",
    f"{M}image_encoder.trunk.stages=[1,2,3,2]",
    f"{M}image_encoder.trunk.global_att_blocks=[5]",
    f"+{M}image_encoder.trunk.window_spec=[8,4,6,3]",
    f"{M}image_encoder.neck.d_model=64",
    f"{M}image_encoder.neck.position_encoding.num_pos_feats=64",
    f"{M}image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    f"{M}memory_attention.d_model=64",
    f"{M}memory_attention.num_layers=2",
    f"{M}memory_attention.layer.d_model=64",
    f"{M}memory_attention.layer.dim_feedforward=256",
    f"{M}memory_attention.layer.self_attention.embedding_dim=64",
    f"{M}memory_attention.layer.self_attention.feat_sizes=[8,8]",
    f"{M}memory_attention.layer.cross_attention.embedding_dim=64",
    f"{M}memory_attention.layer.cross_attention.feat_sizes=[8,8]",
    f"{M}memory_attention.layer.cross_attention.kv_in_dim=16",
    f"+{M}memory_encoder.in_dim=64",
    f"{M}memory_encoder.out_dim=16",
    f"{M}memory_encoder.position_encoding.num_pos_feats=16",
    f"+{M}memory_encoder.mask_downsampler.embed_dim=64",
    f"{M}memory_encoder.fuser.layer.dim=64",
]
SIZES = {"tiny": TINY, "sam2.1_hiera_t": HIERA_T}


def datapoint(b: dict[str, torch.Tensor], *, dict_key: str) -> Any:
    """Meta's ``BatchedVideoDatapoint`` of one saved batch (the plain tensors of our
    ``BatchedVideo``: ``img_batch`` [T, B, C, H, W], ``masks`` [T, O, H, W], ...); ``dict_key``
    names the batch's dataset in the trainer's loss dictionary."""
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    t = b["img_batch"].shape[0]
    return BatchedVideoDatapoint(
        img_batch=b["img_batch"],
        obj_to_frame_idx=b["obj_to_frame_idx"],
        masks=b["masks"],
        metadata=BatchedVideoMetaData(
            unique_objects_identifier=b["unique_objects_identifier"],
            frame_orig_size=b["frame_orig_size"],
            batch_size=[t],
        ),
        dict_key=dict_key,
        batch_size=[t],
    )
