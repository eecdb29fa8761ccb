"""Propagation: every object tracked through the video, forward or in reverse, in batched
groups or one object at a time, optionally from each object's first prompted frame."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sam2_core.model.video_batched import BatchedMixin
from sam2_core.model.video_prompts import PromptsMixin
from sam2_core.model.video_state import InferenceState


class PropagationMixin(PromptsMixin, BatchedMixin):
    """``propagate_in_video`` and the per-object tracking step."""

    def propagate_in_video(
        self,
        state: InferenceState,
        *,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
        from_first_prompt: bool = False,
    ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Track every object through the video.

        Yields ``(frame_idx, obj_ids, video_res_masks [O, 1, H, W] logits)`` per frame, from
        ``start_frame_idx`` (default: the earliest prompted frame) forward, or backward with
        ``reverse`` (frame 0 included).

        With ``from_first_prompt`` an object is tracked only from its first prompted frame on
        (backward: from its last one); before that its logits are ``NO_OBJ_SCORE`` and nothing
        is stored for it. One such pass gives what separate passes per prompt frame (reset,
        prompt, propagate from that frame) give, with each frame's features computed once:
        the official protocol for objects that appear later in a video.
        """
        with self._inference():
            self._preflight(state)
            order = self._processing_order(state, start_frame_idx, max_frame_num_to_track, reverse)
            groups = self._tracking_groups(state)
            starts: dict[int, int] = {}
            if from_first_prompt:
                for g in groups:  # members of a group share their conditioning frames
                    cond = state.output_dict_per_obj[g[0]]["cond_frame_outputs"]
                    starts[g[0]] = max(cond) if reverse else min(cond)
            banks = {g[0]: self._merge_banks(state, g) for g in groups if len(g) > 1}
            flat = [i for g in groups for i in g]
            unsort = None if flat == sorted(flat) else torch.tensor(flat).argsort()
            for frame_idx in order:
                masks: list[torch.Tensor] = []
                for g in groups:
                    start = starts.get(g[0], frame_idx)
                    if frame_idx > start if reverse else frame_idx < start:
                        masks.append(self._absent_logits(state, g, start))
                    elif len(g) == 1:
                        masks.append(self._propagate_object(state, g[0], frame_idx, reverse))
                    else:
                        masks.append(
                            self._propagate_group(state, g, banks[g[0]], frame_idx, reverse)
                        )
                all_masks = torch.cat(masks, dim=0) if len(masks) > 1 else masks[0]
                if unsort is not None:  # groups are not in object order
                    all_masks = all_masks[unsort]
                yield frame_idx, list(state.obj_ids), self._to_video_res(state, all_masks)

    def _processing_order(
        self,
        state: InferenceState,
        start_frame_idx: int | None,
        max_frame_num_to_track: int | None,
        reverse: bool,
    ) -> list[int]:
        if start_frame_idx is None:
            start_frame_idx = min(
                t for d in state.output_dict_per_obj.values() for t in d["cond_frame_outputs"]
            )
        self._check_frame(state, start_frame_idx)
        n = state.num_frames if max_frame_num_to_track is None else int(max_frame_num_to_track)
        if reverse:
            end = max(start_frame_idx - n, 0)
            return list(range(start_frame_idx, end - 1, -1)) if start_frame_idx > 0 else []
        end = min(start_frame_idx + n, state.num_frames - 1)
        return list(range(start_frame_idx, end + 1))

    def _propagate_object(
        self, state: InferenceState, obj_idx: int, frame_idx: int, reverse: bool
    ) -> torch.Tensor:
        """Low-res logits ``[1, 1, S/4, S/4]`` of one object on one frame (tracked or stored)."""
        out_dict = state.output_dict_per_obj[obj_idx]
        if frame_idx in out_dict["cond_frame_outputs"]:
            pred = out_dict["cond_frame_outputs"][frame_idx]["pred_masks"].to(state.device)
            if self.clear_non_cond_mem_around_input:
                self._clear_non_cond_mem_around_input(state, frame_idx, obj_idx)
        else:
            current_out, pred = self._run_single_frame_inference(
                state,
                output_dict=out_dict,
                frame_idx=frame_idx,
                is_init_cond_frame=False,
                point_inputs=None,
                mask_inputs=None,
                reverse=reverse,
                run_mem_encoder=True,
            )
            out_dict["non_cond_frame_outputs"][frame_idx] = current_out
            if self.bounded_memory:
                self._trim_outputs(state, obj_idx, frame_idx, reverse)
        state.frames_tracked_per_obj[obj_idx][frame_idx] = {"reverse": reverse}
        return pred
