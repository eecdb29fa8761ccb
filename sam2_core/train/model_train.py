"""SAM 2 training forward (the official SAM2Train loop) built on top of ``SAM2Base`` methods.

The model itself (:class:`sam2_core.model.sam2.SAM2Base`) stays an inference module with the
official parameter names; this wrapper adds prompt simulation and the multi-step correction loop
without adding parameters, so ``wrapper.model.state_dict()`` is an official checkpoint.

Per clip: image features for all ``B*T`` images at once -> prompt plan -> frames processed in the
order "initial conditioning frames, then the rest in time order" -> per frame one SAM 2 tracking
step, plus (on frames chosen for correction) ``num_correction_pt_per_frame`` extra clicks, each
re-running only the SAM heads on the same memory-conditioned features. Every intermediate
prediction is recorded under the ``multistep_*`` keys consumed by the loss.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from sam2_core.model.sam2 import SAM2Base, SamHeadsOutput, TrackStepOutput
from sam2_core.train.prompts import PointInputs, PromptPlan, PromptSimulator, concat_points


class TrainBatch(Protocol):
    """What the training forward needs from a collated batch (``collate.BatchedVideo``)."""

    masks: Tensor  # [T, O, H, W] bool

    @property
    def flat_img_batch(self) -> Tensor: ...  # [B*T, 3, H, W], video-major

    @property
    def flat_obj_to_img_idx(self) -> Tensor: ...  # [T, O] index into flat_img_batch

    @property
    def num_frames(self) -> int: ...


class SAM2Train(nn.Module):
    """Training wrapper around a ``SAM2Base``.

    Args:
        model: the SAM 2 model (official method names).
        prompts: prompt simulator (decision generator shared across ranks, click generator per rank).
        act_ckpt_image_encoder: recompute the image encoder in backward (saves most activation memory).
        act_ckpt_iterative_pt_sampling: recompute single-mask SAM-head passes of the correction loop.
        forward_backbone_per_frame_for_eval: in eval mode, run the image encoder lazily per frame on
            the unique images only (less peak memory for long clips).
    """

    def __init__(
        self,
        model: nn.Module,
        prompts: PromptSimulator | None = None,
        *,
        act_ckpt_image_encoder: bool = False,
        act_ckpt_iterative_pt_sampling: bool = False,
        forward_backbone_per_frame_for_eval: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, SAM2Base):
            raise TypeError(f"SAM2Train needs a SAM2Base (build_model), got {type(model).__name__}")
        self.model = model
        self.prompts = prompts or PromptSimulator()
        self.act_ckpt_image_encoder = act_ckpt_image_encoder
        self.act_ckpt_iterative_pt_sampling = act_ckpt_iterative_pt_sampling
        self.forward_backbone_per_frame_for_eval = forward_backbone_per_frame_for_eval

    # ------------------------------------------------------------------------------------------
    def forward(self, batch: TrainBatch) -> list[TrackStepOutput]:
        """Returns one output dict per frame (time order), without ``obj_ptr``."""
        per_frame = not self.training and self.forward_backbone_per_frame_for_eval
        backbone_out = None if per_frame else self.forward_image(batch.flat_img_batch)
        plan = self.prepare_prompt_inputs(batch)
        return self.forward_tracking(backbone_out, plan, batch)

    def forward_image(self, images: Tensor) -> dict[str, Any]:
        """Image encoder on ``[N, 3, H, W]`` (optionally under activation checkpointing).

        A frozen image encoder (no parameter requires grad, e.g. ``optim.freeze=[image_encoder.*]``)
        runs under ``no_grad``: its features are computed once per clip and keep no activations
        for backward (the same values; the gradient stops there anyway).
        """
        if not any(p.requires_grad for p in self.model.image_encoder.parameters()):
            with torch.no_grad():
                return dict(self.model.forward_image(images))
        if self.act_ckpt_image_encoder and self.training and torch.is_grad_enabled():
            out: dict[str, Any] = checkpoint(self.model.forward_image, images, use_reentrant=False)
            return out
        return dict(self.model.forward_image(images))

    def prepare_prompt_inputs(self, batch: TrainBatch) -> PromptPlan:
        """Draw the prompt plan of the clip (see :mod:`sam2_core.train.prompts`)."""
        return self.prompts.plan(batch.masks, training=self.training)

    def _features_for(
        self, backbone_out: dict[str, Any] | None, batch: TrainBatch, img_ids: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
        """Per-object features of one frame: lists of ``[HW, O, C]`` plus the feature sizes."""
        if backbone_out is None:
            unique, inverse = torch.unique(img_ids, return_inverse=True)
            out = self.forward_image(batch.flat_img_batch[unique])
            _, feats, pos, sizes = self.model.prepare_backbone_features(out)
            return [x[:, inverse] for x in feats], [x[:, inverse] for x in pos], sizes
        _, feats, pos, sizes = self._prepared
        return [x[:, img_ids] for x in feats], [x[:, img_ids] for x in pos], sizes

    def forward_tracking(
        self, backbone_out: dict[str, Any] | None, plan: PromptPlan, batch: TrainBatch
    ) -> list[TrackStepOutput]:
        """Track all frames of the clip in the plan's processing order."""
        if backbone_out is not None:
            self._prepared = self.model.prepare_backbone_features(backbone_out)
        output_dict: dict[str, dict[int, TrackStepOutput]] = {
            "cond_frame_outputs": {},
            "non_cond_frame_outputs": {},
        }
        try:
            for t in plan.processing_order:
                img_ids = batch.flat_obj_to_img_idx[t].long()
                feats, pos, sizes = self._features_for(backbone_out, batch, img_ids)
                out = self.track_step(
                    frame_idx=t,
                    is_init_cond_frame=t in plan.init_cond_frames,
                    current_vision_feats=feats,
                    current_vision_pos_embeds=pos,
                    feat_sizes=sizes,
                    point_inputs=plan.point_inputs_per_frame.get(t),
                    mask_inputs=plan.mask_inputs_per_frame.get(t),
                    gt_masks=plan.gt_masks_per_frame[t],
                    correct=t in plan.frames_to_add_correction_pt,
                    output_dict=output_dict,
                    num_frames=plan.num_frames,
                )
                as_cond = t in plan.init_cond_frames or (
                    self.prompts.cfg.add_all_frames_to_correct_as_cond
                    and t in plan.frames_to_add_correction_pt
                )
                key = "cond_frame_outputs" if as_cond else "non_cond_frame_outputs"
                output_dict[key][t] = out
        finally:
            self._prepared = None
        merged = {**output_dict["cond_frame_outputs"], **output_dict["non_cond_frame_outputs"]}
        # obj_ptr is only needed for memory; dropping it avoids DDP "unused output" surprises.
        return [
            {k: v for k, v in merged[t].items() if k != "obj_ptr"} for t in range(plan.num_frames)
        ]

    _prepared: Any = None

    # ------------------------------------------------------------------------------------------
    def track_step(
        self,
        *,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[Tensor],
        current_vision_pos_embeds: list[Tensor],
        feat_sizes: list[tuple[int, int]],
        point_inputs: PointInputs | None,
        mask_inputs: Tensor | None,
        gt_masks: Tensor,
        correct: bool,
        output_dict: dict[str, dict[int, TrackStepOutput]],
        num_frames: int,
    ) -> TrackStepOutput:
        """One frame: SAM 2 step, optional correction clicks, memory encoding of the final mask."""
        m = self.model
        # The tracking step proper is SAM2Base's (mask prompts are used directly as the output,
        # with no gradient into the SAM heads; other frames are memory-conditioned first).
        current_out, sam_outputs, high_res_features, pix_feat = m.predict_frame(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=current_vision_feats,
            current_vision_pos_embeds=current_vision_pos_embeds,
            feat_sizes=feat_sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict=output_dict,
            num_frames=num_frames,
            track_in_reverse=False,
            prev_sam_mask_logits=None,
        )
        low_multi, high_multi, ious, low_masks, high_masks, obj_ptr, scores = sam_outputs
        current_out["multistep_pred_masks"] = low_masks
        current_out["multistep_pred_masks_high_res"] = high_masks
        current_out["multistep_pred_multimasks"] = [low_multi]
        current_out["multistep_pred_multimasks_high_res"] = [high_multi]
        current_out["multistep_pred_ious"] = [ious]
        current_out["multistep_point_inputs"] = [point_inputs]
        current_out["multistep_object_score_logits"] = [scores]
        if correct:
            point_inputs, final = self._iter_correct_pt_sampling(
                frame_idx=frame_idx,
                is_init_cond_frame=is_init_cond_frame,
                point_inputs=point_inputs,
                gt_masks=gt_masks,
                high_res_features=high_res_features,
                pix_feat_with_mem=pix_feat,
                sam_outputs=sam_outputs,
                current_out=current_out,
            )
            _, _, _, low_masks, high_masks, obj_ptr, scores = final
        current_out["pred_masks"] = low_masks
        current_out["pred_masks_high_res"] = high_masks
        current_out["obj_ptr"] = obj_ptr
        current_out["object_score_logits"] = scores
        # The memory is encoded from the *final* (corrected) mask of the frame.
        m.attach_memory(
            current_vision_feats=current_vision_feats,
            feat_sizes=feat_sizes,
            point_inputs=point_inputs,
            run_mem_encoder=True,
            high_res_masks=high_masks,
            object_score_logits=scores,
            current_out=current_out,
        )
        return current_out

    def _iter_correct_pt_sampling(
        self,
        *,
        frame_idx: int,
        is_init_cond_frame: bool,
        point_inputs: PointInputs | None,
        gt_masks: Tensor,
        high_res_features: list[Tensor] | None,
        pix_feat_with_mem: Tensor,
        sam_outputs: SamHeadsOutput,
        current_out: TrackStepOutput,
    ) -> tuple[PointInputs | None, SamHeadsOutput]:
        """Add correction clicks one at a time, recording every intermediate prediction."""
        m = self.model
        low_multi, high_multi, ious, low_masks, high_masks, _, scores = sam_outputs
        all_low = [low_masks]
        all_high = [high_masks]
        all_low_multi = [low_multi]
        all_high_multi = [high_multi]
        all_ious = [ious]
        all_points = [point_inputs]
        all_scores = [scores]
        for step in range(1, self.prompts.cfg.num_correction_pt_per_frame + 1):
            new_points, new_labels = self.prompts.correction_click(
                gt_masks, high_masks, training=self.training, frame_idx=frame_idx, step=step
            )
            point_inputs = concat_points(point_inputs, new_points, new_labels)
            multimask = m.use_multimask(is_init_cond_frame, point_inputs)
            kwargs: dict[str, Any] = {
                "backbone_features": pix_feat_with_mem,
                "point_inputs": point_inputs,
                # the previous step's low-res logits are the mask prompt of the next step
                "mask_inputs": low_masks,
                "high_res_features": high_res_features,
                "multimask_output": multimask,
            }
            if self.act_ckpt_iterative_pt_sampling and not multimask and self.training:
                sam_outputs = checkpoint(m.forward_sam_heads, use_reentrant=False, **kwargs)
            else:
                sam_outputs = m.forward_sam_heads(**kwargs)
            low_multi, high_multi, ious, low_masks, high_masks, _, scores = sam_outputs
            all_low.append(low_masks)
            all_high.append(high_masks)
            all_low_multi.append(low_multi)
            all_high_multi.append(high_multi)
            all_ious.append(ious)
            all_points.append(point_inputs)
            all_scores.append(scores)
        current_out["multistep_pred_masks"] = torch.cat(all_low, dim=1)
        current_out["multistep_pred_masks_high_res"] = torch.cat(all_high, dim=1)
        current_out["multistep_pred_multimasks"] = all_low_multi
        current_out["multistep_pred_multimasks_high_res"] = all_high_multi
        current_out["multistep_pred_ious"] = all_ious
        current_out["multistep_point_inputs"] = all_points
        current_out["multistep_object_score_logits"] = all_scores
        return point_inputs, sam_outputs
