"""Memory-bank hygiene of the predictor: dropping non-conditioning outputs next to new
prompts, and (bounded memory) those no later frame of a pass can attend to."""

from __future__ import annotations

from sam2_core.model.sam2 import TrackStepOutput
from sam2_core.model.video_base import PredictorBase
from sam2_core.model.video_state import InferenceState


class MemoryMixin(PredictorBase):
    """Removal of non-conditioning outputs from the per-object memory banks."""

    def _clear_radius(self) -> int:
        return int(self.model.memory_temporal_stride_for_eval * self.model.num_maskmem)

    def _clear_non_cond_mem_around_input(
        self, state: InferenceState, frame_idx: int, obj_idx: int
    ) -> None:
        """Drop non-conditioning outputs within ``num_maskmem`` frames of a prompted frame."""
        non_cond = state.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
        _drop_around(non_cond, frame_idx, self._clear_radius())

    def _stale_frames(
        self, non_cond: dict[int, TrackStepOutput], frame_idx: int, reverse: bool
    ) -> list[int]:
        """Non-conditioning frames that no later frame of this pass can attend to."""
        m = self.model
        window = max(
            (m.num_maskmem - 1) * m.memory_temporal_stride_for_eval + 1,
            m.max_obj_ptrs_in_encoder,
        )
        return [
            t for t in non_cond if (t > frame_idx + window if reverse else t < frame_idx - window)
        ]

    def _trim_outputs(
        self, state: InferenceState, obj_idx: int, frame_idx: int, reverse: bool
    ) -> None:
        """Drop non-conditioning outputs that no later frame of this pass can attend to."""
        non_cond = state.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
        for t in self._stale_frames(non_cond, frame_idx, reverse):
            del non_cond[t]
            state.frames_tracked_per_obj[obj_idx].pop(t, None)


def _drop_around(non_cond: dict[int, TrackStepOutput], frame_idx: int, radius: int) -> None:
    for t in range(frame_idx - radius, frame_idx + radius + 1):
        non_cond.pop(t, None)
