"""Model calls of the predictor: the per-frame backbone feature cache, one tracking step
for a batch of objects, and the memory encoder (memories stored in bf16)."""

from __future__ import annotations

import torch

from sam2_core.model.sam2 import OutputDict, TrackStepOutput
from sam2_core.model.video_base import PredictorBase
from sam2_core.model.video_outputs import fill_holes_in_mask_scores
from sam2_core.model.video_state import InferenceState


class StepsMixin(PredictorBase):
    """Image features, ``track_step`` and the memory encoder on one frame."""

    def _get_image_feature(
        self, state: InferenceState, frame_idx: int, batch_size: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
        """Backbone features of a frame (the most recent frame is cached), expanded to
        ``batch_size``: ``(vision_feats, vision_pos_embeds, feat_sizes)``."""
        cached = state.cached_features.get(frame_idx)
        if cached is None:
            image = state.frames.frame(frame_idx).to(state.device).float().unsqueeze(0)
            backbone_out = self.model.forward_image(image)
            state.cached_features = {frame_idx: (image, backbone_out)}
        else:
            backbone_out = cached[1]
        expanded = {
            "backbone_fpn": [
                x.expand(batch_size, -1, -1, -1) for x in backbone_out["backbone_fpn"]
            ],
            "vision_pos_enc": [
                x.expand(batch_size, -1, -1, -1) for x in backbone_out["vision_pos_enc"]
            ],
        }
        _, feats, pos, sizes = self.model.prepare_backbone_features(expanded)
        return feats, pos, sizes

    def _run_single_frame_inference(
        self,
        state: InferenceState,
        *,
        output_dict: OutputDict,
        frame_idx: int,
        is_init_cond_frame: bool,
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: torch.Tensor | None = None,
        batch_size: int = 1,
    ) -> tuple[TrackStepOutput, torch.Tensor]:
        """One tracking step of ``batch_size`` objects sharing ``output_dict``; returns
        ``(compact stored output, pred_masks [B, 1, S/4, S/4] on the compute device)``.
        Memories are stored in bf16 on the storage device."""
        feats, pos, sizes = self._get_image_feature(state, frame_idx, batch_size)
        out = self.model.track_step(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict=output_dict,
            num_frames=state.num_frames,
            track_in_reverse=reverse,
            run_mem_encoder=run_mem_encoder,
            prev_sam_mask_logits=prev_sam_mask_logits,
        )
        storage = state.storage_device
        maskmem = out["maskmem_features"]
        if maskmem is not None:
            maskmem = maskmem.to(torch.bfloat16).to(storage, non_blocking=True)
        pred_masks = out["pred_masks"].float()
        if self.fill_hole_area > 0:
            pred_masks = fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)
        compact = {
            "maskmem_features": maskmem,
            "maskmem_pos_enc": self._get_maskmem_pos_enc(state, out["maskmem_pos_enc"]),
            "pred_masks": pred_masks.to(storage, non_blocking=True),
            "obj_ptr": out["obj_ptr"],  # small: kept on the compute device
            "object_score_logits": out["object_score_logits"],
        }
        return compact, pred_masks

    def _run_memory_encoder(
        self,
        state: InferenceState,
        *,
        frame_idx: int,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_pts: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        feats, _, sizes = self._get_image_feature(state, frame_idx, high_res_masks.shape[0])
        maskmem, pos = self.model.encode_memory(
            current_vision_feats=feats,
            feat_sizes=sizes,
            pred_masks_high_res=high_res_masks,
            object_score_logits=object_score_logits,
            is_mask_from_pts=is_mask_from_pts,
        )
        maskmem = maskmem.to(torch.bfloat16).to(state.storage_device, non_blocking=True)
        return maskmem, self._get_maskmem_pos_enc(state, pos)

    @staticmethod
    def _get_maskmem_pos_enc(
        state: InferenceState, pos: list[torch.Tensor] | None
    ) -> list[torch.Tensor] | None:
        """The memory position encoding is the same for every frame: store one copy."""
        if pos is None:
            return None
        cached = state.constants.get("maskmem_pos_enc")
        if cached is None:
            cached = [x[0:1].clone() for x in pos]
            state.constants["maskmem_pos_enc"] = cached
        return [x.expand(pos[0].shape[0], -1, -1, -1) for x in cached]
