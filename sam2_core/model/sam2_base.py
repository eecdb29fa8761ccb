"""SAM2Base: the SAM 2.1 model (image encoder, SAM heads, memory) and its per-frame tracking step.

Constructor arguments, attribute names, method names and semantics follow the official
``sam2.modeling.sam2_base.SAM2Base`` so that official checkpoints load strictly and official
configs map one to one. Training (prompt simulation) and inference (the video predictor) are
built on top of these methods; ``forward`` is deliberately not implemented.

Shapes below and in the mixin modules use ``B`` (objects), ``C = d_model`` (256 in the released
models), ``Cm`` the memory width (64), ``(H, W)`` the stride-16 grid (64x64 at 1024 px),
``S = image_size``.

:class:`SAM2Base` keeps the constructor, the image encoder and the backbone features; the rest
comes from mixins, one concept per module (their shared names are re-exported here):
:mod:`.sam2_types` (``NO_OBJ_SCORE``, ``FrameOutput``, ``OutputDict``, typed attributes),
:mod:`.sam2_heads` (prompt encoder and mask decoder), :mod:`.sam2_memory` (memory bank and
memory attention, ``select_closest_cond_frames``) and :mod:`.sam2_tracking` (memory encoding
and ``track_step``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sam2_core.model.sam2_memory import select_closest_cond_frames
from sam2_core.model.sam2_tracking import TrackingMixin
from sam2_core.model.sam2_types import NO_OBJ_SCORE, FrameOutput, OutputDict, _seq_to_map

__all__ = [
    "NO_OBJ_SCORE",
    "FrameOutput",
    "OutputDict",
    "SAM2Base",
    "_seq_to_map",
    "select_closest_cond_frames",
]


class SAM2Base(TrackingMixin):
    """SAM 2.1 with official constructor arguments (see the module docstring)."""

    def __init__(
        self,
        image_encoder: nn.Module,
        memory_attention: nn.Module,
        memory_encoder: nn.Module,
        num_maskmem: int = 7,
        image_size: int = 512,
        backbone_stride: int = 16,
        sigmoid_scale_for_mem_enc: float = 1.0,
        sigmoid_bias_for_mem_enc: float = 0.0,
        binarize_mask_from_pts_for_mem_enc: bool = False,
        use_mask_input_as_output_without_sam: bool = False,
        max_cond_frames_in_attn: int = -1,
        directly_add_no_mem_embed: bool = False,
        use_high_res_features_in_sam: bool = False,
        multimask_output_in_sam: bool = False,
        multimask_min_pt_num: int = 1,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        memory_temporal_stride_for_eval: int = 1,
        non_overlap_masks_for_mem_enc: bool = False,
        use_obj_ptrs_in_encoder: bool = False,
        max_obj_ptrs_in_encoder: int = 16,
        add_tpos_enc_to_obj_ptrs: bool = True,
        proj_tpos_enc_in_obj_ptrs: bool = False,
        use_signed_tpos_enc_to_obj_ptrs: bool = False,
        only_obj_ptrs_in_the_past_for_eval: bool = False,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        fixed_no_obj_ptr: bool = False,
        soft_no_obj_ptr: bool = False,
        use_mlp_for_obj_ptr_proj: bool = False,
        no_obj_embed_spatial: bool = False,
        sam_mask_decoder_extra_args: dict[str, Any] | None = None,
        compile_image_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.use_high_res_features_in_sam = use_high_res_features_in_sam
        self.num_feature_levels = 3 if use_high_res_features_in_sam else 1
        self.use_obj_ptrs_in_encoder = use_obj_ptrs_in_encoder
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        if use_obj_ptrs_in_encoder:
            # Mask prompts of mask-as-output frames are shrunk 4x before the SAM heads compute
            # their object pointer.
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.add_tpos_enc_to_obj_ptrs = add_tpos_enc_to_obj_ptrs
        if proj_tpos_enc_in_obj_ptrs and not add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        self.proj_tpos_enc_in_obj_ptrs = proj_tpos_enc_in_obj_ptrs
        self.use_signed_tpos_enc_to_obj_ptrs = use_signed_tpos_enc_to_obj_ptrs
        self.only_obj_ptrs_in_the_past_for_eval = only_obj_ptrs_in_the_past_for_eval

        self.memory_attention = memory_attention
        self.hidden_dim: int = _d_model(image_encoder, memory_attention)
        self.memory_encoder = memory_encoder
        self.mem_dim: int = self.hidden_dim
        out_proj = getattr(memory_encoder, "out_proj", None)
        if out_proj is not None and hasattr(out_proj, "weight"):
            # The memory encoder compresses features to a narrower width (64 in SAM 2.1).
            self.mem_dim = int(out_proj.weight.shape[0])
        self.num_maskmem = num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        nn.init.trunc_normal_(self.maskmem_tpos_enc, std=0.02)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        nn.init.trunc_normal_(self.no_mem_embed, std=0.02)
        nn.init.trunc_normal_(self.no_mem_pos_enc, std=0.02)
        self.directly_add_no_mem_embed = directly_add_no_mem_embed

        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.use_mask_input_as_output_without_sam = use_mask_input_as_output_without_sam
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid

        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.sam_mask_decoder_extra_args = sam_mask_decoder_extra_args
        self.pred_obj_scores = pred_obj_scores
        self.pred_obj_scores_mlp = pred_obj_scores_mlp
        self.fixed_no_obj_ptr = fixed_no_obj_ptr
        self.soft_no_obj_ptr = soft_no_obj_ptr
        if fixed_no_obj_ptr and not (pred_obj_scores and use_obj_ptrs_in_encoder):
            raise ValueError("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder")
        if pred_obj_scores and use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
            nn.init.trunc_normal_(self.no_obj_ptr, std=0.02)
        self.use_mlp_for_obj_ptr_proj = use_mlp_for_obj_ptr_proj
        self.no_obj_embed_spatial: nn.Parameter | None = None
        if no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)

        self._build_sam_heads()
        self.max_cond_frames_in_attn = max_cond_frames_in_attn

        self.compile_image_encoder = compile_image_encoder
        if compile_image_encoder:
            self.compile_image_encoder_now()

    # ----------------------------------------------------------------------------------------
    # construction helpers
    # ----------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "SAM2Base has no forward(); use track_step (training loop) or VideoPredictor"
        )

    def compile_image_encoder_now(self, *, mode: str = "max-autotune") -> None:
        """Replace the image encoder's forward by a ``torch.compile``d one (fixed shapes)."""
        self.image_encoder.forward = torch.compile(  # type: ignore[method-assign]
            self.image_encoder.forward, mode=mode, fullgraph=True, dynamic=False
        )

    # ----------------------------------------------------------------------------------------
    # image features
    # ----------------------------------------------------------------------------------------

    def forward_image(self, img_batch: torch.Tensor) -> dict[str, Any]:
        """Run the image encoder on ``img_batch [N, 3, S, S]`` (normalised).

        Returns ``{"vision_features": [N, C, H, W], "vision_pos_enc": [3 maps],
        "backbone_fpn": [3 maps]}``; with high-res features the stride-4/8 FPN levels are
        already projected by ``conv_s0``/``conv_s1`` (done once per image, not per object).
        """
        backbone_out: dict[str, Any] = self.image_encoder(img_batch)
        if self.use_high_res_features_in_sam:
            fpn = list(backbone_out["backbone_fpn"])
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
            backbone_out["backbone_fpn"] = fpn
        return backbone_out

    def _prepare_backbone_features(
        self, backbone_out: dict[str, Any]
    ) -> tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
        """Flatten the last ``num_feature_levels`` levels to sequences ``[HW, N, C]``.

        Returns ``(backbone_out, vision_feats, vision_pos_embeds, feat_sizes)``.
        """
        backbone_out = dict(backbone_out)
        fpn, pos = backbone_out["backbone_fpn"], backbone_out["vision_pos_enc"]
        if len(fpn) != len(pos) or len(fpn) < self.num_feature_levels:
            raise ValueError("backbone output has inconsistent or too few feature levels")
        maps = fpn[-self.num_feature_levels :]
        pos_maps = pos[-self.num_feature_levels :]
        feat_sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in pos_maps]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in maps]
        vision_pos_embeds = [x.flatten(2).permute(2, 0, 1) for x in pos_maps]
        return backbone_out, vision_feats, vision_pos_embeds, feat_sizes


def _d_model(image_encoder: nn.Module, memory_attention: nn.Module) -> int:
    """Transformer width: the FPN neck's ``d_model`` (equal to the memory attention's)."""
    neck = getattr(image_encoder, "neck", None)
    for src in (neck, memory_attention):
        d = getattr(src, "d_model", None)
        if d is not None:
            return int(d)
    raise ValueError("cannot infer d_model from the image encoder neck or the memory attention")
