"""Predictor settings, the inference context (eval mode, flags, autocast) and the
creation and bookkeeping of a video's state (objects, frame checks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from sam2_core.model.sam2 import SAM2Base
from sam2_core.model.video_frames import make_frame_source
from sam2_core.model.video_state import InferenceState, _empty_output_dict


class PredictorBase:
    """Settings and state bookkeeping shared by the parts of
    :class:`~sam2_core.model.predictor.VideoPredictor` (its arguments are documented there)."""

    def __init__(
        self,
        model: SAM2Base,
        *,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        fill_hole_area: int = 0,
        apply_postprocessing: bool = True,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        bounded_memory: bool = False,
        autocast: bool | None = None,
        batch_objects: bool = True,
    ) -> None:
        self.model = model
        self.offload_video_to_cpu = offload_video_to_cpu
        self.offload_state_to_cpu = offload_state_to_cpu
        self.fill_hole_area = int(fill_hole_area)
        self.apply_postprocessing = apply_postprocessing
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.bounded_memory = bounded_memory
        self.batch_objects = batch_objects
        self.autocast = autocast

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ context

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode + the predictor's postprocessing flags + inference mode (+ bf16 autocast
        on CUDA); the model's previous mode and flags are restored afterwards."""
        model = self.model
        dec = model.sam_mask_decoder
        saved = (
            model.training,
            dec.dynamic_multimask_via_stability,
            dec.dynamic_multimask_stability_delta,
            dec.dynamic_multimask_stability_thresh,
            model.binarize_mask_from_pts_for_mem_enc,
        )
        model.eval()
        if self.apply_postprocessing:
            dec.dynamic_multimask_via_stability = True
            dec.dynamic_multimask_stability_delta = 0.05
            dec.dynamic_multimask_stability_thresh = 0.98
            model.binarize_mask_from_pts_for_mem_enc = True
        use_amp = self.autocast if self.autocast is not None else self.device.type == "cuda"
        amp = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if use_amp
            else contextlib.nullcontext()
        )
        try:
            with torch.inference_mode(), amp:
                yield
        finally:
            model.train(saved[0])
            dec.dynamic_multimask_via_stability = saved[1]
            dec.dynamic_multimask_stability_delta = saved[2]
            dec.dynamic_multimask_stability_thresh = saved[3]
            model.binarize_mask_from_pts_for_mem_enc = saved[4]

    # ------------------------------------------------------------------ state

    def init_state(
        self, frames: Any, *, video_size: tuple[int, int] | None = None
    ) -> InferenceState:
        """Create the state of a video.

        Args:
            frames: list of uint8 ``[H, W, 3]`` RGB arrays, a folder of frames named by index
                (``00000.jpg`` ...), a ``VideoRecord``, or a normalised ``[T, 3, S, S]`` tensor.
            video_size: ``(H, W)`` of the original video; required for tensors only.
        """
        device = self.device
        cache = None if self.offload_video_to_cpu else device
        source = make_frame_source(
            frames, image_size=self.image_size, cache_device=cache, video_size=video_size
        )
        state = InferenceState(
            frames=source,
            num_frames=len(source),
            video_height=source.height,
            video_width=source.width,
            device=device,
            storage_device=torch.device("cpu") if self.offload_state_to_cpu else device,
        )
        return state

    def reset_state(self, state: InferenceState) -> None:
        """Remove every object, prompt and output (the frames stay)."""
        state.point_inputs_per_obj.clear()
        state.mask_inputs_per_obj.clear()
        state.obj_id_to_idx.clear()
        state.obj_idx_to_id.clear()
        state.obj_ids.clear()
        state.output_dict_per_obj.clear()
        state.temp_output_dict_per_obj.clear()
        state.frames_tracked_per_obj.clear()
        state.cached_features.clear()
        state.constants.clear()

    def _obj_id_to_idx(self, state: InferenceState, obj_id: int) -> int:
        """Index of an object id; new ids get the next index (allowed at any time)."""
        idx = state.obj_id_to_idx.get(int(obj_id))
        if idx is not None:
            return idx
        idx = len(state.obj_id_to_idx)
        state.obj_id_to_idx[int(obj_id)] = idx
        state.obj_idx_to_id[idx] = int(obj_id)
        state.obj_ids[:] = list(state.obj_id_to_idx)
        state.point_inputs_per_obj[idx] = {}
        state.mask_inputs_per_obj[idx] = {}
        state.output_dict_per_obj[idx] = _empty_output_dict()
        state.temp_output_dict_per_obj[idx] = _empty_output_dict()
        state.frames_tracked_per_obj[idx] = {}
        return idx

    def _check_frame(self, state: InferenceState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"frame_idx {frame_idx} out of range [0, {state.num_frames})")
