"""The SAM prompt encoder and mask decoder of SAM 2.1: building them, running them on
(memory-conditioned) features, the "no object" pointer, mask prompts used directly as outputs
and when to predict three masks.

Shapes as in :mod:`sam2_core.model.sam2_base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2_core.model.nn.common import MLP
from sam2_core.model.nn.mask_decoder import MaskDecoder
from sam2_core.model.nn.prompt_encoder import PromptEncoder
from sam2_core.model.nn.transformer import TwoWayTransformer
from sam2_core.model.sam2_types import NO_OBJ_SCORE, SAM2Fields


class SamHeadsMixin(SAM2Fields):
    """Prompt encoder, mask decoder and object-pointer heads of
    :class:`~sam2_core.model.sam2_base.SAM2Base`."""

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

    def _forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_inputs: dict[str, torch.Tensor] | None = None,
        mask_inputs: torch.Tensor | None = None,
        high_res_features: list[torch.Tensor] | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Prompt encoder + mask decoder on (memory-conditioned) features.

        Args:
            backbone_features: ``[B, C, H, W]``.
            point_inputs: ``{"point_coords": [B, P, 2] (x, y in input pixels),
                "point_labels": [B, P] int}`` or None (-> one padding point).
            mask_inputs: ``[B, 1, h, w]`` mask logits/binary (resized to 4H x 4W) or None.
            high_res_features: ``[[B, C/8, 4H, 4W], [B, C/4, 2H, 2W]]`` or None.
            multimask_output: predict 3 masks and pick the best by predicted IoU.

        Returns:
            ``(low_res_multimasks [B, M, 4H, 4W], high_res_multimasks [B, M, S, S],
            ious [B, M], low_res_masks [B, 1, 4H, 4W], high_res_masks [B, 1, S, S],
            obj_ptr [B, C], object_score_logits [B, 1])``.
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
        return (
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
    ) -> tuple[torch.Tensor, ...]:
        """Turn a binary mask prompt ``[B, 1, S, S]`` directly into outputs (logits +-10).

        The object pointer still comes from the SAM heads, prompted with the 4x-downsampled
        mask. Same 7-tuple as :meth:`_forward_sam_heads`.
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
            obj_ptr = self._forward_sam_heads(
                backbone_features=backbone_features,
                mask_inputs=self.mask_downsample(mask_f),
                high_res_features=high_res_features,
            )[5]
        # An empty mask prompt means "object absent".
        is_obj_appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        lam = is_obj_appearing.float()
        object_score_logits = out_scale * lam + out_bias
        if self.pred_obj_scores:
            if self.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * self.no_obj_ptr
        return (
            low_res_masks,
            high_res_masks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    def _use_multimask(
        self, is_init_cond_frame: bool, point_inputs: dict[str, torch.Tensor] | None
    ) -> bool:
        """3 masks for ambiguous prompts: 0..1 clicks on init frames (or while tracking)."""
        num_pts = 0 if point_inputs is None else point_inputs["point_labels"].size(1)
        return bool(
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and (self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num)
        )
