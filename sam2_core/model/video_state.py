"""Per-video inference state of the predictor: frames, prompts, feature cache and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sam2_core.model.sam2 import OutputDict
from sam2_core.model.video_frames import FrameSource


def _empty_output_dict() -> OutputDict:
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


@dataclass
class InferenceState:
    """Everything the predictor keeps for one video (per object index ``obj_idx``).

    ``output_dict_per_obj[obj_idx]`` holds the committed per-frame outputs (``pred_masks``
    ``[1, 1, S/4, S/4]``, ``obj_ptr`` ``[1, C]``, ``object_score_logits`` ``[1, 1]``,
    ``maskmem_features`` ``[1, Cm, S/16, S/16]`` bf16, ``maskmem_pos_enc``); prompts land in
    ``temp_output_dict_per_obj`` first and are committed when propagation starts.
    """

    frames: FrameSource
    num_frames: int
    video_height: int
    video_width: int
    device: torch.device
    storage_device: torch.device
    point_inputs_per_obj: dict[int, dict[int, dict[str, torch.Tensor]]] = field(
        default_factory=dict
    )
    mask_inputs_per_obj: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)
    cached_features: dict[int, tuple[torch.Tensor, dict[str, Any]]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    obj_id_to_idx: dict[int, int] = field(default_factory=dict)
    obj_idx_to_id: dict[int, int] = field(default_factory=dict)
    obj_ids: list[int] = field(default_factory=list)
    output_dict_per_obj: dict[int, OutputDict] = field(default_factory=dict)
    temp_output_dict_per_obj: dict[int, OutputDict] = field(default_factory=dict)
    frames_tracked_per_obj: dict[int, dict[int, dict[str, bool]]] = field(default_factory=dict)

    @property
    def num_objects(self) -> int:
        return len(self.obj_idx_to_id)
