"""Prompts of the predictor: masks, clicks, boxes and correction clicks on a frame, and the
commit of the prompted frames (memories encoded, moved into the banks) before propagation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2_core.model.sam2 import TrackStepOutput
from sam2_core.model.video_memory import MemoryMixin
from sam2_core.model.video_outputs import OutputsMixin
from sam2_core.model.video_state import InferenceState
from sam2_core.model.video_steps import StepsMixin


class PromptsMixin(StepsMixin, OutputsMixin, MemoryMixin):
    """Prompting objects on frames; prompts land in the temporary outputs."""

    def add_new_mask(
        self, state: InferenceState, *, frame_idx: int, obj_id: int, mask: Any
    ) -> tuple[int, list[int], torch.Tensor]:
        """Prompt ``obj_id`` on ``frame_idx`` with a binary mask ``[H, W]`` (video resolution).

        Returns ``(frame_idx, obj_ids, video_res_masks [O, 1, H, W] logits)`` of that frame.
        """
        self._check_frame(state, frame_idx)
        with self._inference():
            obj_idx = self._obj_id_to_idx(state, obj_id)
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
            if m.dim() != 2:
                raise ValueError(f"mask must be [H, W], got {tuple(m.shape)}")
            m = m.bool()[None, None].float().to(state.device)
            s = self.image_size
            if m.shape[-2:] != (s, s):
                m = F.interpolate(
                    m, size=(s, s), mode="bilinear", align_corners=False, antialias=True
                )
                m = (m >= 0.5).float()
            state.mask_inputs_per_obj[obj_idx][frame_idx] = m
            state.point_inputs_per_obj[obj_idx].pop(frame_idx, None)
            return self._run_prompted_frame(
                state, obj_idx=obj_idx, frame_idx=frame_idx, point_inputs=None, mask_inputs=m
            )

    def add_new_points_or_box(
        self,
        state: InferenceState,
        *,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[int, list[int], torch.Tensor]:
        """Prompt ``obj_id`` on ``frame_idx`` with clicks and/or a box.

        Args:
            points: ``[N, 2]`` (x, y) in video pixels (model-input pixels if not
                ``normalize_coords``); labels ``[N]``: 1 positive, 0 negative.
            box: ``[4]`` xyxy (becomes two points with labels 2, 3, placed first).
            clear_old_points: replace earlier clicks of this object on this frame; with False
                the clicks are appended (correction clicks; the previous mask logits are fed to
                the decoder as well).

        Returns ``(frame_idx, obj_ids, video_res_masks [O, 1, H, W] logits)`` of that frame.
        """
        self._check_frame(state, frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("give points (with labels) or a box")
        with self._inference():
            obj_idx = self._obj_id_to_idx(state, obj_id)
            pts = (
                torch.zeros(0, 2)
                if points is None
                else torch.as_tensor(points, dtype=torch.float32)
            )
            lbl = torch.zeros(0, dtype=torch.int32) if labels is None else torch.as_tensor(labels)
            pts, lbl = pts.reshape(1, -1, 2).float(), lbl.reshape(1, -1).to(torch.int32)
            if pts.shape[1] != lbl.shape[1]:
                raise ValueError(f"{pts.shape[1]} points but {lbl.shape[1]} labels")
            if box is not None:
                if not clear_old_points:
                    raise ValueError("a box must come before clicks: use clear_old_points=True")
                box_t = torch.as_tensor(box, dtype=torch.float32).reshape(1, 2, 2)
                pts = torch.cat([box_t, pts], dim=1)
                lbl = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), lbl], dim=1)
            if normalize_coords:
                pts = pts / torch.tensor(
                    [state.video_width, state.video_height], dtype=torch.float32
                )
            pts = (pts * self.image_size).to(state.device)
            lbl = lbl.to(state.device)

            old = None if clear_old_points else state.point_inputs_per_obj[obj_idx].get(frame_idx)
            point_inputs = _concat_points(old, pts, lbl)
            state.point_inputs_per_obj[obj_idx][frame_idx] = point_inputs
            state.mask_inputs_per_obj[obj_idx].pop(frame_idx, None)
            return self._run_prompted_frame(
                state,
                obj_idx=obj_idx,
                frame_idx=frame_idx,
                point_inputs=point_inputs,
                mask_inputs=None,
            )

    def _run_prompted_frame(
        self,
        state: InferenceState,
        *,
        obj_idx: int,
        frame_idx: int,
        point_inputs: dict[str, torch.Tensor] | None,
        mask_inputs: torch.Tensor | None,
    ) -> tuple[int, list[int], torch.Tensor]:
        """Predict the prompted object on its frame into the temporary outputs."""
        tracked = state.frames_tracked_per_obj[obj_idx]
        is_init_cond_frame = frame_idx not in tracked
        reverse = False if is_init_cond_frame else tracked[frame_idx]["reverse"]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        out_dict = state.output_dict_per_obj[obj_idx]
        temp_dict = state.temp_output_dict_per_obj[obj_idx]

        prev_logits = None
        if point_inputs is not None:
            # The latest mask of this object on this frame refines the new clicks.
            prev = temp_dict[key].get(frame_idx)
            if prev is None:
                prev = out_dict["cond_frame_outputs"].get(frame_idx)
            if prev is None:
                prev = out_dict["non_cond_frame_outputs"].get(frame_idx)
            if prev is not None and prev["pred_masks"] is not None:
                prev_logits = prev["pred_masks"].to(state.device).float().clamp(-32.0, 32.0)

        current_out, _ = self._run_single_frame_inference(
            state,
            output_dict=out_dict,
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            reverse=reverse,
            run_mem_encoder=False,
            prev_sam_mask_logits=prev_logits,
        )
        temp_dict[key][frame_idx] = current_out
        video_res = self._consolidate_at_video_res(state, frame_idx, is_cond=is_cond)
        return frame_idx, list(state.obj_ids), self._to_video_res(state, video_res)

    def _preflight(self, state: InferenceState) -> None:
        """Commit the prompted frames: encode their memories and move them into the bank."""
        if state.num_objects == 0:
            raise RuntimeError("no objects: add a mask, points or a box first")
        self._encode_prompted_memories(state)
        for obj_idx in range(state.num_objects):
            out_dict = state.output_dict_per_obj[obj_idx]
            temp_dict = state.temp_output_dict_per_obj[obj_idx]
            for key in ("non_cond_frame_outputs", "cond_frame_outputs"):
                for frame_idx, out in temp_dict[key].items():
                    out_dict[key][frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_non_cond_mem_around_input(state, frame_idx, obj_idx)
                temp_dict[key].clear()
            if not out_dict["cond_frame_outputs"]:
                obj_id = state.obj_idx_to_id[obj_idx]
                raise RuntimeError(f"object id {obj_id} has no prompt on any frame")
            for frame_idx in out_dict["cond_frame_outputs"]:
                out_dict["non_cond_frame_outputs"].pop(frame_idx, None)

    def _encode_prompted_memories(self, state: InferenceState) -> None:
        """Memories of the prompted frames still without one, frame by frame (features computed
        once per frame), all objects of a frame in one batch when batching is on.

        The memory is the low-res prediction, upsampled and binarised (treated as coming from
        clicks, like the official code).
        """
        pending: dict[int, list[TrackStepOutput]] = {}
        for obj_idx in range(state.num_objects):
            temp_dict = state.temp_output_dict_per_obj[obj_idx]
            for key in ("non_cond_frame_outputs", "cond_frame_outputs"):
                for frame_idx, out in temp_dict[key].items():
                    if out["maskmem_features"] is None:
                        pending.setdefault(frame_idx, []).append(out)
        together = self.batch_objects and not self.model.non_overlap_masks_for_mem_enc
        for frame_idx, outs in sorted(pending.items()):
            for chunk in [outs] if together else [[o] for o in outs]:
                high_res = F.interpolate(
                    torch.cat([o["pred_masks"] for o in chunk]).to(state.device).float(),
                    size=(self.image_size, self.image_size),
                    mode="bilinear",
                    align_corners=False,
                )
                feats, pos = self._run_memory_encoder(
                    state,
                    frame_idx=frame_idx,
                    high_res_masks=high_res,
                    object_score_logits=torch.cat([o["object_score_logits"] for o in chunk]),
                    is_mask_from_pts=True,
                )
                for b, out in enumerate(chunk):
                    out["maskmem_features"] = feats[b : b + 1]
                    out["maskmem_pos_enc"] = None if pos is None else [x[b : b + 1] for x in pos]


def _concat_points(
    old: dict[str, torch.Tensor] | None, points: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Append clicks ``[1, N, 2]`` / ``[1, N]`` to an object's existing clicks."""
    if old is None:
        return {"point_coords": points, "point_labels": labels}
    return {
        "point_coords": torch.cat([old["point_coords"], points], dim=1),
        "point_labels": torch.cat([old["point_labels"], labels], dim=1),
    }
