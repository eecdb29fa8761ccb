"""Names shared by :class:`~sam2_core.model.sam2_base.SAM2Base` and its mixins: the
"object absent" logit, the per-frame output dictionaries, the sequence-to-map reshape and
:class:`SAM2Fields`, the typed attributes that ``SAM2Base.__init__`` sets.

Shapes as in :mod:`sam2_core.model.sam2_base`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sam2_core.model.nn.mask_decoder import MaskDecoder
from sam2_core.model.nn.prompt_encoder import PromptEncoder

#: Logit written into the masks of objects predicted absent.
NO_OBJ_SCORE = -1024.0

FrameOutput = dict[str, Any]
OutputDict = dict[str, dict[int, FrameOutput]]


def _seq_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[HW, B, C]`` -> ``[B, C, H, W]``."""
    return x.permute(1, 2, 0).reshape(x.shape[1], x.shape[2], size[0], size[1])


class SAM2Fields(nn.Module):
    """Declares (for type checking only) the attributes that ``SAM2Base.__init__`` and
    ``_build_sam_heads`` set and the mixins read; it adds no parameters and no behaviour."""

    image_encoder: nn.Module
    memory_attention: nn.Module
    memory_encoder: nn.Module
    hidden_dim: int
    mem_dim: int
    image_size: int
    backbone_stride: int
    num_maskmem: int
    maskmem_tpos_enc: nn.Parameter
    no_mem_embed: nn.Parameter
    no_mem_pos_enc: nn.Parameter
    no_obj_ptr: nn.Parameter
    no_obj_embed_spatial: nn.Parameter | None
    mask_downsample: nn.Conv2d
    directly_add_no_mem_embed: bool
    max_cond_frames_in_attn: int
    memory_temporal_stride_for_eval: int
    use_obj_ptrs_in_encoder: bool
    max_obj_ptrs_in_encoder: int
    add_tpos_enc_to_obj_ptrs: bool
    proj_tpos_enc_in_obj_ptrs: bool
    use_signed_tpos_enc_to_obj_ptrs: bool
    only_obj_ptrs_in_the_past_for_eval: bool
    sigmoid_scale_for_mem_enc: float
    sigmoid_bias_for_mem_enc: float
    binarize_mask_from_pts_for_mem_enc: bool
    non_overlap_masks_for_mem_enc: bool
    use_mask_input_as_output_without_sam: bool
    use_high_res_features_in_sam: bool
    multimask_output_in_sam: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    multimask_output_for_tracking: bool
    use_multimask_token_for_obj_ptr: bool
    iou_prediction_use_sigmoid: bool
    sam_mask_decoder_extra_args: dict[str, Any] | None
    pred_obj_scores: bool
    pred_obj_scores_mlp: bool
    fixed_no_obj_ptr: bool
    soft_no_obj_ptr: bool
    use_mlp_for_obj_ptr_proj: bool
    # Set by ``_build_sam_heads``.
    sam_prompt_embed_dim: int
    sam_image_embedding_size: int
    sam_prompt_encoder: PromptEncoder
    sam_mask_decoder: MaskDecoder
    obj_ptr_proj: nn.Module
    obj_ptr_tpos_proj: nn.Module
