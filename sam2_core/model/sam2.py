"""SAM2Base: the SAM 2.1 model (image encoder, SAM heads, memory) and its per-frame tracking step.

Constructor arguments, attribute names and semantics follow the official
``sam2.modeling.sam2_base.SAM2Base`` so that official checkpoints load strictly and official
configs map one to one. ``forward`` is deliberately not implemented: training
(:mod:`sam2_core.train.model_train`) and inference (:mod:`sam2_core.model.predictor`) call the
public surface below.

Public surface:
    forward_image, prepare_backbone_features    image features ([HW, B, C] sequences)
    track_step                                  one frame: SAM heads on memory + memory encoding
    predict_frame                               the SAM part of track_step (no memory encoding);
                                                exposes what correction clicks re-use
    forward_sam_heads, use_multimask            prompt encoder + mask decoder on given features
    encode_memory, attach_memory                the memory encoder on a frame's final mask
    apply_non_overlapping_constraints           keep the highest-scoring object per pixel

Shapes use ``B`` (objects), ``C = d_model`` (256 in the released models), ``Cm`` the memory
width (64), ``(H, W)`` the stride-16 grid (64x64 at 1024 px), ``S = image_size``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2_core.model.nn.common import MLP
from sam2_core.model.nn.mask_decoder import MaskDecoder
from sam2_core.model.nn.position_encoding import get_1d_sine_pe
from sam2_core.model.nn.prompt_encoder import PromptEncoder
from sam2_core.model.nn.transformer import TwoWayTransformer

__all__ = [
    "NO_OBJ_SCORE",
    "FramePrediction",
    "OutputDict",
    "SAM2Base",
    "SamHeadsOutput",
    "TrackStepOutput",
    "select_closest_cond_frames",
]

#: Logit written into the masks of objects predicted absent.
NO_OBJ_SCORE = -1024.0

#: One frame's tracking output (``track_step``'s dictionary; keys documented there).
TrackStepOutput = dict[str, Any]
#: A memory bank: ``{"cond_frame_outputs": {t: out}, "non_cond_frame_outputs": {t: out}}``.
OutputDict = dict[str, dict[int, TrackStepOutput]]


class SamHeadsOutput(NamedTuple):
    """What the SAM heads predict for ``B`` objects (see :meth:`SAM2Base.forward_sam_heads`)."""

    low_res_multimasks: torch.Tensor  # [B, M, 4H, 4W]
    high_res_multimasks: torch.Tensor  # [B, M, S, S]
    ious: torch.Tensor  # [B, M]
    low_res_masks: torch.Tensor  # [B, 1, 4H, 4W]
    high_res_masks: torch.Tensor  # [B, 1, S, S]
    obj_ptr: torch.Tensor  # [B, C]
    object_score_logits: torch.Tensor  # [B, 1]


class FramePrediction(NamedTuple):
    """The SAM part of one tracking step (see :meth:`SAM2Base.predict_frame`)."""

    output: TrackStepOutput  # {"point_inputs", "mask_inputs"} so far
    sam_outputs: SamHeadsOutput
    high_res_features: list[torch.Tensor] | None  # [[B, C/8, 4H, 4W], [B, C/4, 2H, 2W]]
    pix_feat_with_mem: torch.Tensor  # [B, C, H, W]


def _seq_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[HW, B, C]`` -> ``[B, C, H, W]``."""
    return x.permute(1, 2, 0).reshape(x.shape[1], x.shape[2], size[0], size[1])


def select_closest_cond_frames(
    frame_idx: int, cond_frame_outputs: dict[int, TrackStepOutput], max_cond_frame_num: int
) -> tuple[dict[int, TrackStepOutput], dict[int, TrackStepOutput]]:
    """Pick at most ``max_cond_frame_num`` conditioning frames for ``frame_idx``.

    Keeps the closest frame before and the closest at/after ``frame_idx``, then the remaining
    ones by temporal distance. ``-1`` keeps all. Returns ``(selected, unselected)``.
    """
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or >= 2")
    selected: dict[int, TrackStepOutput] = {}
    before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond_frame_outputs[before]
    after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond_frame_outputs[after]
    remaining = max_cond_frame_num - len(selected)
    rest = sorted(
        (t for t in cond_frame_outputs if t not in selected), key=lambda t: abs(t - frame_idx)
    )
    for t in rest[:remaining]:
        selected[t] = cond_frame_outputs[t]
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


class SAM2Base(nn.Module):
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

    def prepare_backbone_features(
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

    # ----------------------------------------------------------------------------------------
    # SAM heads: prompt encoder, mask decoder, object pointers
    # ----------------------------------------------------------------------------------------

    def _build_sam_heads(self) -> None:
        """Prompt encoder, mask decoder and object-pointer projections (sizes hard-coded as in
        the official model: 8 heads, MLP 2048, 16 mask channels, IoU head hidden 256)."""
        self.sam_prompt_embed_dim = self.hidden_dim
        self.sam_image_embedding_size = self.image_size // self.backbone_stride
        size = self.sam_image_embedding_size
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=self.hidden_dim,
            image_embedding_size=(size, size),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=16,
        )
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=self.hidden_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=self.hidden_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid,
            pred_obj_scores=self.pred_obj_scores,
            pred_obj_scores_mlp=self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
            **dict(self.sam_mask_decoder_extra_args or {}),
        )
        if self.use_obj_ptrs_in_encoder:
            if self.use_mlp_for_obj_ptr_proj:
                self.obj_ptr_proj: nn.Module = MLP(
                    self.hidden_dim, self.hidden_dim, self.hidden_dim, 3
                )
            else:
                self.obj_ptr_proj = nn.Linear(self.hidden_dim, self.hidden_dim)
        else:
            self.obj_ptr_proj = nn.Identity()
        if self.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj: nn.Module = nn.Linear(self.hidden_dim, self.mem_dim)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()

    def forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_inputs: dict[str, torch.Tensor] | None = None,
        mask_inputs: torch.Tensor | None = None,
        high_res_features: list[torch.Tensor] | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """Prompt encoder + mask decoder on (memory-conditioned) features.

        Args:
            backbone_features: ``[B, C, H, W]``.
            point_inputs: ``{"point_coords": [B, P, 2] (x, y in input pixels),
                "point_labels": [B, P] int}`` or None (-> one padding point).
            mask_inputs: ``[B, 1, h, w]`` mask logits/binary (resized to 4H x 4W) or None.
            high_res_features: ``[[B, C/8, 4H, 4W], [B, C/4, 2H, 2W]]`` or None.
            multimask_output: predict 3 masks and pick the best by predicted IoU.

        Returns:
            :class:`SamHeadsOutput` ``(low_res_multimasks [B, M, 4H, 4W], high_res_multimasks
            [B, M, S, S], ious [B, M], low_res_masks [B, 1, 4H, 4W], high_res_masks
            [B, 1, S, S], obj_ptr [B, C], object_score_logits [B, 1])``.
        """
        b = backbone_features.size(0)
        device = backbone_features.device
        size = self.sam_image_embedding_size
        if backbone_features.shape[1:] != (self.hidden_dim, size, size):
            raise ValueError(
                f"backbone features {tuple(backbone_features.shape)} do not match "
                f"[B, {self.hidden_dim}, {size}, {size}]"
            )
        if point_inputs is not None:
            coords = point_inputs["point_coords"]
            labels = point_inputs["point_labels"]
            if coords.size(0) != b or labels.size(0) != b:
                raise ValueError("point_inputs batch size differs from the features")
        else:
            # Without clicks SAM gets a single padding point.
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)

        sam_mask_prompt = None
        if mask_inputs is not None:
            if mask_inputs.dim() != 4 or mask_inputs.shape[:2] != (b, 1):
                raise ValueError(
                    f"mask_inputs must be [B, 1, h, w], got {tuple(mask_inputs.shape)}"
                )
            target = self.sam_prompt_encoder.mask_input_size
            if mask_inputs.shape[-2:] != target:
                sam_mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=target,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
            else:
                sam_mask_prompt = mask_inputs

        sparse, dense = self.sam_prompt_encoder(
            points=(coords, labels), boxes=None, masks=sam_mask_prompt
        )
        low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        is_obj_appearing = object_score_logits > 0
        if self.pred_obj_scores:
            # Absent objects get masks of NO_OBJ_SCORE everywhere.
            low_res_multimasks = torch.where(
                is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE
            )
        # Upsample in float32 (the decoder may run in bf16 under autocast).
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = F.interpolate(
            low_res_multimasks,
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )

        sam_output_token = sam_output_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            batch = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[batch, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[batch, best].unsqueeze(1)
            if sam_output_tokens.size(1) > 1:
                sam_output_token = sam_output_tokens[batch, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = self.obj_ptr_proj(sam_output_token)
        if self.pred_obj_scores:
            obj_ptr = self._mix_no_obj_ptr(obj_ptr, object_score_logits, is_obj_appearing)
        return SamHeadsOutput(
            low_res_multimasks,
            high_res_multimasks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    def _mix_no_obj_ptr(
        self,
        obj_ptr: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_obj_appearing: torch.Tensor,
    ) -> torch.Tensor:
        """Blend the learned "no object" pointer in where the object is absent."""
        if self.soft_no_obj_ptr:
            lam = object_score_logits.sigmoid()
        else:
            lam = is_obj_appearing.float()
        if self.fixed_no_obj_ptr:
            obj_ptr = lam * obj_ptr
        return obj_ptr + (1 - lam) * self.no_obj_ptr

    def _use_mask_as_output(
        self,
        backbone_features: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        mask_inputs: torch.Tensor,
    ) -> SamHeadsOutput:
        """Turn a binary mask prompt ``[B, 1, S, S]`` directly into outputs (logits +-10).

        The object pointer still comes from the SAM heads, prompted with the 4x-downsampled
        mask. Same outputs as :meth:`forward_sam_heads`.
        """
        out_scale, out_bias = 20.0, -10.0  # sigmoid(+-10) is ~1/0
        mask_f = mask_inputs.float()
        high_res_masks = mask_f * out_scale + out_bias
        low_res_masks = F.interpolate(
            high_res_masks,
            size=(high_res_masks.size(-2) // 4, high_res_masks.size(-1) // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()
        if not self.use_obj_ptrs_in_encoder:
            obj_ptr = torch.zeros(mask_inputs.size(0), self.hidden_dim, device=mask_inputs.device)
        else:
            obj_ptr = self.forward_sam_heads(
                backbone_features=backbone_features,
                mask_inputs=self.mask_downsample(mask_f),
                high_res_features=high_res_features,
            ).obj_ptr
        # An empty mask prompt means "object absent".
        is_obj_appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        lam = is_obj_appearing.float()
        object_score_logits = out_scale * lam + out_bias
        if self.pred_obj_scores:
            if self.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * self.no_obj_ptr
        return SamHeadsOutput(
            low_res_masks,
            high_res_masks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    def use_multimask(
        self, is_init_cond_frame: bool, point_inputs: dict[str, torch.Tensor] | None
    ) -> bool:
        """3 masks for ambiguous prompts: 0..1 clicks on init frames (or while tracking)."""
        num_pts = 0 if point_inputs is None else point_inputs["point_labels"].size(1)
        return bool(
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and (self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num)
        )

    # ----------------------------------------------------------------------------------------
    # memory conditioning: memory bank and memory attention
    # ----------------------------------------------------------------------------------------

    def _prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[torch.Tensor],
        current_vision_pos_embeds: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool = False,
    ) -> torch.Tensor:
        """Fuse the current frame's stride-16 features ``[HW, B, C]`` with the memory bank.

        Initial conditioning frames get ``no_mem_embed`` instead. Returns ``[B, C, H, W]``.
        """
        b = current_vision_feats[-1].size(1)
        hw = feat_sizes[-1]
        if self.num_maskmem == 0:  # single-image SAM
            return _seq_to_map(current_vision_feats[-1], hw)

        if is_init_cond_frame:
            if self.directly_add_no_mem_embed:
                return _seq_to_map(current_vision_feats[-1] + self.no_mem_embed, hw)
            memory = self.no_mem_embed.expand(1, b, self.mem_dim)
            memory_pos = self.no_mem_pos_enc.expand(1, b, self.mem_dim)
            num_obj_ptr_tokens = 0
        else:
            memory, memory_pos, num_obj_ptr_tokens = self._gather_memory(
                frame_idx=frame_idx,
                batch_size=b,
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
                dtype=current_vision_feats[-1].dtype,
                device=current_vision_feats[-1].device,
            )
        pix_feat_with_mem = self.memory_attention(
            curr=current_vision_feats[-1],
            curr_pos=current_vision_pos_embeds[-1],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )
        return _seq_to_map(pix_feat_with_mem, hw)

    def _memory_frames(
        self,
        frame_idx: int,
        selected_cond: dict[int, TrackStepOutput],
        unselected_cond: dict[int, TrackStepOutput],
        output_dict: OutputDict,
        track_in_reverse: bool,
    ) -> list[tuple[int, TrackStepOutput | None]]:
        """``(t_pos, output)`` of memory frames: cond frames at t_pos 0, then the previous
        ``num_maskmem - 1`` frames (the most recent at t_pos ``num_maskmem - 1``)."""
        out: list[tuple[int, TrackStepOutput | None]] = [(0, o) for o in selected_cond.values()]
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos  # how many frames before the current one
            if t_rel == 1:
                # The immediately preceding frame is always used, whatever the stride.
                prev = frame_idx + 1 if track_in_reverse else frame_idx - 1
            elif not track_in_reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            o = output_dict["non_cond_frame_outputs"].get(prev)
            if o is None:
                o = unselected_cond.get(prev)
            out.append((t_pos, o))
        return out

    def _gather_memory(
        self,
        *,
        frame_idx: int,
        batch_size: int,
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Memory tokens ``[M, B, Cm]``, their position encodings and the object-pointer count."""
        cond_outputs = output_dict["cond_frame_outputs"]
        if len(cond_outputs) == 0:
            raise ValueError("tracking a non-initial frame needs at least one conditioning frame")
        selected, unselected = select_closest_cond_frames(
            frame_idx, cond_outputs, self.max_cond_frames_in_attn
        )
        mems: list[torch.Tensor] = []
        mem_pos: list[torch.Tensor] = []
        for t_pos, prev in self._memory_frames(
            frame_idx, selected, unselected, output_dict, track_in_reverse
        ):
            if prev is None:
                continue
            # Stored memories may be bf16 and/or on the CPU (the predictor stores them so).
            feats = prev["maskmem_features"].to(device=device, non_blocking=True)
            mems.append(feats.flatten(2).permute(2, 0, 1).to(dtype))
            pos = prev["maskmem_pos_enc"][-1].to(device=device).flatten(2).permute(2, 0, 1)
            mem_pos.append(pos + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])

        num_obj_ptr_tokens = 0
        if self.use_obj_ptrs_in_encoder:
            ptrs = self._gather_obj_ptrs(
                frame_idx=frame_idx,
                batch_size=batch_size,
                selected_cond=selected,
                unselected_cond=unselected,
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
                device=device,
            )
            if ptrs is not None:
                mems.append(ptrs[0].to(dtype))
                mem_pos.append(ptrs[1])
                num_obj_ptr_tokens = ptrs[0].shape[0]
        return torch.cat(mems, dim=0), torch.cat(mem_pos, dim=0), num_obj_ptr_tokens

    def _gather_obj_ptrs(
        self,
        *,
        frame_idx: int,
        batch_size: int,
        selected_cond: dict[int, TrackStepOutput],
        unselected_cond: dict[int, TrackStepOutput],
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Object-pointer tokens ``[P * C/Cm, B, Cm]`` with temporal PEs, or None."""
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {
                t: o
                for t, o in selected_cond.items()
                if (t >= frame_idx if track_in_reverse else t <= frame_idx)
            }
        else:
            ptr_cond = selected_cond
        sign = -1 if track_in_reverse else 1
        pos_and_ptrs: list[tuple[int, torch.Tensor]] = []
        for t, o in ptr_cond.items():
            dist = (
                (frame_idx - t) * sign
                if self.use_signed_tpos_enc_to_obj_ptrs
                else abs(frame_idx - t)
            )
            pos_and_ptrs.append((dist, o["obj_ptr"]))
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            prev = output_dict["non_cond_frame_outputs"].get(t, unselected_cond.get(t))
            if prev is not None:
                pos_and_ptrs.append((t_diff, prev["obj_ptr"]))
        if not pos_and_ptrs:
            return None

        c, cm = self.hidden_dim, self.mem_dim
        obj_ptrs = torch.stack([p.to(device) for _, p in pos_and_ptrs], dim=0)  # [P, B, C]
        if self.add_tpos_enc_to_obj_ptrs:
            t_diff_max = max_ptrs - 1
            tpos_dim = c if self.proj_tpos_enc_in_obj_ptrs else cm
            rel = torch.tensor([d for d, _ in pos_and_ptrs], device=device)
            obj_pos = get_1d_sine_pe(rel / t_diff_max, dim=tpos_dim)
            obj_pos = self.obj_ptr_tpos_proj(obj_pos)
            obj_pos = obj_pos.unsqueeze(1).expand(-1, batch_size, cm)
        else:
            obj_pos = obj_ptrs.new_zeros(len(pos_and_ptrs), batch_size, cm)
        if cm < c:
            # Each C-wide pointer becomes C/Cm memory tokens of width Cm.
            obj_ptrs = obj_ptrs.reshape(-1, batch_size, c // cm, cm)
            obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(c // cm, dim=0)
        return obj_ptrs, obj_pos

    # ----------------------------------------------------------------------------------------
    # memory encoding and the tracking step
    # ----------------------------------------------------------------------------------------

    @staticmethod
    def apply_non_overlapping_constraints(pred_masks: torch.Tensor) -> torch.Tensor:
        """Where objects overlap keep only the highest-scoring one (others clamped to <= -10).

        ``pred_masks [B, 1, H, W]`` over the objects of one frame.
        """
        b = pred_masks.size(0)
        if b == 1:
            return pred_masks
        winner = torch.argmax(pred_masks, dim=0, keepdim=True)
        ids = torch.arange(b, device=pred_masks.device)[:, None, None, None]
        return torch.where(winner == ids, pred_masks, torch.clamp(pred_masks, max=-10.0))

    def encode_memory(
        self,
        current_vision_feats: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        pred_masks_high_res: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode the frame's raw stride-16 features and its final mask ``[B, 1, S, S]`` into a
        memory ``[B, Cm, H, W]`` (+ its position encodings)."""
        pix_feat = _seq_to_map(current_vision_feats[-1], feat_sizes[-1])
        if self.non_overlap_masks_for_mem_enc and not self.training:
            pred_masks_high_res = self.apply_non_overlapping_constraints(pred_masks_high_res)
        binarize = self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts
        if binarize and not self.training:
            mask_for_mem = (pred_masks_high_res > 0).float()
        else:
            mask_for_mem = torch.sigmoid(pred_masks_high_res)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        out = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        maskmem_features = out["vision_features"]
        maskmem_pos_enc = out["vision_pos_enc"]
        if self.no_obj_embed_spatial is not None:
            is_obj = (object_score_logits > 0).float()
            maskmem_features = maskmem_features + (1 - is_obj[..., None, None]) * (
                self.no_obj_embed_spatial[..., None, None].expand(*maskmem_features.shape)
            )
        return maskmem_features, maskmem_pos_enc

    def predict_frame(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[torch.Tensor],
        current_vision_pos_embeds: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool,
        prev_sam_mask_logits: torch.Tensor | None,
    ) -> FramePrediction:
        """Predict the masks of one frame without encoding its memory (arguments as in
        :meth:`track_step`).

        Training adds correction clicks on top (re-running :meth:`forward_sam_heads` on the
        returned memory-conditioned features) before :meth:`attach_memory`; ``track_step`` is
        this plus :meth:`attach_memory`.
        """
        current_out: TrackStepOutput = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}
        high_res_features = None
        if len(current_vision_feats) > 1:
            high_res_features = [
                _seq_to_map(x, s) for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])
            ]
        if mask_inputs is not None and self.use_mask_input_as_output_without_sam:
            pix_feat = _seq_to_map(current_vision_feats[-1], feat_sizes[-1])
            sam_outputs = self._use_mask_as_output(pix_feat, high_res_features, mask_inputs)
        else:
            pix_feat = self._prepare_memory_conditioned_features(
                frame_idx=frame_idx,
                is_init_cond_frame=is_init_cond_frame,
                current_vision_feats=current_vision_feats[-1:],
                current_vision_pos_embeds=current_vision_pos_embeds[-1:],
                feat_sizes=feat_sizes[-1:],
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
            )
            if prev_sam_mask_logits is not None:
                # Correction clicks: the previous logits are the mask prompt.
                if point_inputs is None or mask_inputs is not None:
                    raise ValueError("prev_sam_mask_logits needs point_inputs and no mask_inputs")
                mask_inputs = prev_sam_mask_logits
            sam_outputs = self.forward_sam_heads(
                backbone_features=pix_feat,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                high_res_features=high_res_features,
                multimask_output=self.use_multimask(is_init_cond_frame, point_inputs),
            )
        return FramePrediction(current_out, sam_outputs, high_res_features, pix_feat)

    def attach_memory(
        self,
        current_vision_feats: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        point_inputs: dict[str, torch.Tensor] | None,
        run_mem_encoder: bool,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        current_out: TrackStepOutput,
    ) -> None:
        """Add ``maskmem_features`` ``[B, Cm, H, W]`` / ``maskmem_pos_enc`` to ``current_out``
        (both None without ``run_mem_encoder`` or without a memory), encoding the frame's final
        mask ``high_res_masks [B, 1, S, S]`` with :meth:`encode_memory`."""
        if run_mem_encoder and self.num_maskmem > 0:
            feats, pos = self.encode_memory(
                current_vision_feats=current_vision_feats,
                feat_sizes=feat_sizes,
                pred_masks_high_res=high_res_masks,
                object_score_logits=object_score_logits,
                is_mask_from_pts=point_inputs is not None,
            )
            current_out["maskmem_features"] = feats
            current_out["maskmem_pos_enc"] = pos
        else:
            current_out["maskmem_features"] = None
            current_out["maskmem_pos_enc"] = None

    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[torch.Tensor],
        current_vision_pos_embeds: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
        output_dict: OutputDict,
        num_frames: int,
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: torch.Tensor | None = None,
    ) -> TrackStepOutput:
        """One frame of tracking for a batch of objects.

        Args:
            frame_idx: index of the frame in the video.
            is_init_cond_frame: the frame carries the first prompts (no memory yet).
            current_vision_feats / current_vision_pos_embeds: per level ``[HW, B, C_l]``.
            feat_sizes: per level ``(H, W)``.
            point_inputs / mask_inputs: prompts (see :meth:`forward_sam_heads`); a mask
                prompt is ``[B, 1, S, S]``.
            output_dict: ``{"cond_frame_outputs": {t: out}, "non_cond_frame_outputs": {...}}``.
            num_frames: video length (bounds the object-pointer window).
            track_in_reverse: tracking backwards in time.
            run_mem_encoder: also encode this frame's memory.
            prev_sam_mask_logits: previous low-res logits for correction clicks.

        Returns:
            ``{"point_inputs", "mask_inputs", "pred_masks" [B,1,4H,4W], "pred_masks_high_res"
            [B,1,S,S], "obj_ptr" [B,C], "maskmem_features" [B,Cm,H,W] | None,
            "maskmem_pos_enc" [ [B,Cm,H,W] ] | None}`` (+ ``object_score_logits`` in eval).
        """
        current_out, sam_outputs, _, _ = self.predict_frame(
            frame_idx,
            is_init_cond_frame,
            current_vision_feats,
            current_vision_pos_embeds,
            feat_sizes,
            point_inputs,
            mask_inputs,
            output_dict,
            num_frames,
            track_in_reverse,
            prev_sam_mask_logits,
        )
        _, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits = sam_outputs
        current_out["pred_masks"] = low_res_masks
        current_out["pred_masks_high_res"] = high_res_masks
        current_out["obj_ptr"] = obj_ptr
        if not self.training:
            # Only needed by the predictor; training keeps outputs minimal.
            current_out["object_score_logits"] = object_score_logits
        self.attach_memory(
            current_vision_feats,
            feat_sizes,
            point_inputs,
            run_mem_encoder,
            high_res_masks,
            object_score_logits,
            current_out,
        )
        return current_out


def _d_model(image_encoder: nn.Module, memory_attention: nn.Module) -> int:
    """Transformer width: the FPN neck's ``d_model`` (equal to the memory attention's)."""
    neck = getattr(image_encoder, "neck", None)
    for src in (neck, memory_attention):
        d = getattr(src, "d_model", None)
        if d is not None:
            return int(d)
    raise ValueError("cannot infer d_model from the image encoder neck or the memory attention")
