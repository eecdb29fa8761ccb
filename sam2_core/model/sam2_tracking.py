"""The per-frame tracking step of SAM 2.1: SAM heads on memory-conditioned features (or a mask
prompt used as output), then the memory encoder on the frame's final mask.

Shapes as in :mod:`sam2_core.model.sam2_base`.
"""

from __future__ import annotations

import torch

from sam2_core.model.sam2_heads import SamHeadsMixin
from sam2_core.model.sam2_memory import MemoryConditioningMixin
from sam2_core.model.sam2_types import FrameOutput, OutputDict, _seq_to_map


class TrackingMixin(SamHeadsMixin, MemoryConditioningMixin):
    """Memory encoding and ``track_step`` of :class:`~sam2_core.model.sam2_base.SAM2Base`."""

    def _apply_non_overlapping_constraints(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """Where objects overlap keep only the highest-scoring one (others clamped to <= -10).

        ``pred_masks [B, 1, H, W]`` over the objects of one frame.
        """
        b = pred_masks.size(0)
        if b == 1:
            return pred_masks
        winner = torch.argmax(pred_masks, dim=0, keepdim=True)
        ids = torch.arange(b, device=pred_masks.device)[:, None, None, None]
        return torch.where(winner == ids, pred_masks, torch.clamp(pred_masks, max=-10.0))

    def _encode_new_memory(
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
            pred_masks_high_res = self._apply_non_overlapping_constraints(pred_masks_high_res)
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

    def _track_step(
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
    ) -> tuple[FrameOutput, tuple[torch.Tensor, ...], list[torch.Tensor] | None, torch.Tensor]:
        """Predict the masks of one frame. Returns ``(current_out, sam_outputs,
        high_res_features, pix_feat)`` where ``sam_outputs`` is the 7-tuple of the SAM heads."""
        current_out: FrameOutput = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}
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
            sam_outputs = self._forward_sam_heads(
                backbone_features=pix_feat,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                high_res_features=high_res_features,
                multimask_output=self._use_multimask(is_init_cond_frame, point_inputs),
            )
        return current_out, sam_outputs, high_res_features, pix_feat

    def _encode_memory_in_output(
        self,
        current_vision_feats: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        point_inputs: dict[str, torch.Tensor] | None,
        run_mem_encoder: bool,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        current_out: FrameOutput,
    ) -> None:
        """Add ``maskmem_features``/``maskmem_pos_enc`` (or None) to ``current_out``."""
        if run_mem_encoder and self.num_maskmem > 0:
            feats, pos = self._encode_new_memory(
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
    ) -> FrameOutput:
        """One frame of tracking for a batch of objects.

        Args:
            frame_idx: index of the frame in the video.
            is_init_cond_frame: the frame carries the first prompts (no memory yet).
            current_vision_feats / current_vision_pos_embeds: per level ``[HW, B, C_l]``.
            feat_sizes: per level ``(H, W)``.
            point_inputs / mask_inputs: prompts (see :meth:`_forward_sam_heads`); a mask
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
        current_out, sam_outputs, _, _ = self._track_step(
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
        self._encode_memory_in_output(
            current_vision_feats,
            feat_sizes,
            point_inputs,
            run_mem_encoder,
            high_res_masks,
            object_score_logits,
            current_out,
        )
        return current_out
