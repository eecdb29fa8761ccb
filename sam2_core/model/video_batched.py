"""Batched tracking: objects whose memory banks hold the same frames are tracked through
``track_step`` as one batch ``B = number of objects`` with a merged memory bank."""

from __future__ import annotations

import torch

from sam2_core.model.sam2 import NO_OBJ_SCORE, OutputDict, TrackStepOutput
from sam2_core.model.video_memory import MemoryMixin, _drop_around
from sam2_core.model.video_state import InferenceState, _empty_output_dict
from sam2_core.model.video_steps import StepsMixin


class BatchedMixin(StepsMixin, MemoryMixin):
    """Grouping objects into batches and tracking one group on one frame."""

    @staticmethod
    def _absent_logits(state: InferenceState, group: list[int], cond_frame: int) -> torch.Tensor:
        """``NO_OBJ_SCORE`` logits ``[B, 1, h, w]`` (low-res size) for objects not yet tracked."""
        ref = state.output_dict_per_obj[group[0]]["cond_frame_outputs"][cond_frame]["pred_masks"]
        return torch.full(
            (len(group), 1, *ref.shape[-2:]), NO_OBJ_SCORE, dtype=torch.float32, device=state.device
        )

    def _tracking_groups(self, state: InferenceState) -> list[list[int]]:
        """Groups of object indices that can be tracked as one batch each.

        Objects batch together when their banks hold exactly the same conditioning and
        non-conditioning frames: memory frame selection, object-pointer selection and their
        temporal encodings then coincide, and every other step of ``track_step`` works per
        sample, so the batch gives each object what tracking it alone would. Not with
        ``non_overlap_masks_for_mem_enc`` (the memory encoder would then mix objects).
        """
        n = state.num_objects
        if not self.batch_objects or n < 2 or self.model.non_overlap_masks_for_mem_enc:
            return [[i] for i in range(n)]
        groups: dict[tuple[frozenset[int], frozenset[int]], list[int]] = {}
        for i in range(n):
            od = state.output_dict_per_obj[i]
            key = (frozenset(od["cond_frame_outputs"]), frozenset(od["non_cond_frame_outputs"]))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _merge_banks(self, state: InferenceState, group: list[int]) -> OutputDict:
        """One batched memory bank ``[B, ...]`` for a group of objects (only the entries that
        ``track_step`` reads: memories, their position encodings and object pointers)."""
        bank = _empty_output_dict()
        dicts = [state.output_dict_per_obj[i] for i in group]
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for t in dicts[0][key]:
                outs = [d[key][t] for d in dicts]
                pos = outs[0]["maskmem_pos_enc"]
                mem = [o["maskmem_features"] for o in outs]
                bank[key][t] = {
                    "maskmem_features": None if mem[0] is None else torch.cat(mem),
                    "maskmem_pos_enc": None
                    if pos is None
                    else [x[:1].expand(len(group), -1, -1, -1) for x in pos],
                    "obj_ptr": torch.cat([o["obj_ptr"] for o in outs]),
                }
        return bank

    def _propagate_group(
        self,
        state: InferenceState,
        group: list[int],
        bank: OutputDict,
        frame_idx: int,
        reverse: bool,
    ) -> torch.Tensor:
        """Low-res logits ``[B, 1, S/4, S/4]`` of a group of objects on one frame; tracked
        frames are stored in the batched ``bank`` and, as per-object views, in every object's
        own bank (for later prompts and per-object tracking)."""
        if frame_idx in bank["cond_frame_outputs"]:
            pred = torch.cat(
                [
                    state.output_dict_per_obj[i]["cond_frame_outputs"][frame_idx]["pred_masks"]
                    for i in group
                ]
            ).to(state.device)
            if self.clear_non_cond_mem_around_input:
                _drop_around(bank["non_cond_frame_outputs"], frame_idx, self._clear_radius())
                for i in group:
                    self._clear_non_cond_mem_around_input(state, frame_idx, i)
        else:
            current_out, pred = self._run_single_frame_inference(
                state,
                output_dict=bank,
                frame_idx=frame_idx,
                is_init_cond_frame=False,
                point_inputs=None,
                mask_inputs=None,
                reverse=reverse,
                run_mem_encoder=True,
                batch_size=len(group),
            )
            bank["non_cond_frame_outputs"][frame_idx] = current_out
            for b, i in enumerate(group):
                out_i = _select_object(current_out, b)
                state.output_dict_per_obj[i]["non_cond_frame_outputs"][frame_idx] = out_i
            if self.bounded_memory:
                for t in self._stale_frames(bank["non_cond_frame_outputs"], frame_idx, reverse):
                    del bank["non_cond_frame_outputs"][t]
                for i in group:
                    self._trim_outputs(state, i, frame_idx, reverse)
        for i in group:
            state.frames_tracked_per_obj[i][frame_idx] = {"reverse": reverse}
        return pred


def _select_object(out: TrackStepOutput, b: int) -> TrackStepOutput:
    """Object ``b`` of a batched stored output, as views ``[1, ...]`` (no copies)."""
    sel: TrackStepOutput = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            sel[k] = v[b : b + 1]
        elif isinstance(v, list):
            sel[k] = [x[b : b + 1] for x in v]
        else:
            sel[k] = v
    return sel
