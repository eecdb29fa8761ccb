"""Per-video inference state of the predictor and its memory banks: frames, objects, prompts,
the feature cache, the per-object banks of outputs, and the bank operations the predictor
needs (drop memories around a prompt, drop those no later frame can attend to, group objects
whose banks coincide and merge their banks into one batched bank)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sam2_core.model.predictor.frames import FrameSource
from sam2_core.model.sam2 import OutputDict, TrackStepOutput


def empty_output_dict() -> OutputDict:
    """An empty memory bank (no conditioning and no non-conditioning frame)."""
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


@dataclass
class InferenceState:
    """Everything the predictor keeps for one video (per object index ``obj_idx``).

    ``output_dict_per_obj[obj_idx]`` is the object's memory bank of committed per-frame outputs
    (``pred_masks`` ``[1, 1, S/4, S/4]``, ``obj_ptr`` ``[1, C]``, ``object_score_logits``
    ``[1, 1]``, ``maskmem_features`` ``[1, Cm, S/16, S/16]`` bf16, ``maskmem_pos_enc``); prompts
    land in ``temp_output_dict_per_obj`` first and are committed when propagation starts.
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

    # ------------------------------------------------------------------ objects and frames

    def reset(self) -> None:
        """Remove every object, prompt and output (the frames stay)."""
        self.point_inputs_per_obj.clear()
        self.mask_inputs_per_obj.clear()
        self.obj_id_to_idx.clear()
        self.obj_idx_to_id.clear()
        self.obj_ids.clear()
        self.output_dict_per_obj.clear()
        self.temp_output_dict_per_obj.clear()
        self.frames_tracked_per_obj.clear()
        self.cached_features.clear()
        self.constants.clear()

    def obj_idx(self, obj_id: int) -> int:
        """Index of an object id; new ids get the next index (allowed at any time)."""
        idx = self.obj_id_to_idx.get(int(obj_id))
        if idx is not None:
            return idx
        idx = len(self.obj_id_to_idx)
        self.obj_id_to_idx[int(obj_id)] = idx
        self.obj_idx_to_id[idx] = int(obj_id)
        self.obj_ids[:] = list(self.obj_id_to_idx)
        self.point_inputs_per_obj[idx] = {}
        self.mask_inputs_per_obj[idx] = {}
        self.output_dict_per_obj[idx] = empty_output_dict()
        self.temp_output_dict_per_obj[idx] = empty_output_dict()
        self.frames_tracked_per_obj[idx] = {}
        return idx

    def check_frame(self, frame_idx: int) -> None:
        if not 0 <= frame_idx < self.num_frames:
            raise ValueError(f"frame_idx {frame_idx} out of range [0, {self.num_frames})")

    def shared_maskmem_pos_enc(self, pos: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
        """The memory position encoding is the same for every frame: store one copy and
        return it expanded to the batch of ``pos``."""
        if pos is None:
            return None
        cached = self.constants.get("maskmem_pos_enc")
        if cached is None:
            cached = [x[0:1].clone() for x in pos]
            self.constants["maskmem_pos_enc"] = cached
        return [x.expand(pos[0].shape[0], -1, -1, -1) for x in cached]

    # ------------------------------------------------------------------ memory banks

    def clear_non_cond_around(self, obj_idx: int, frame_idx: int, radius: int) -> None:
        """Drop an object's non-conditioning outputs within ``radius`` frames of a prompt."""
        drop_around(self.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"], frame_idx, radius)

    def trim_outputs(self, obj_idx: int, frame_idx: int, *, reverse: bool, window: int) -> None:
        """Drop an object's non-conditioning outputs that no later frame of this pass can
        attend to (further than ``window`` frames behind ``frame_idx``)."""
        non_cond = self.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"]
        for t in stale_frames(non_cond, frame_idx, reverse=reverse, window=window):
            del non_cond[t]
            self.frames_tracked_per_obj[obj_idx].pop(t, None)

    def tracking_groups(self, *, batch: bool) -> list[list[int]]:
        """Groups of object indices that can be tracked as one batch each.

        Objects batch together when their banks hold exactly the same conditioning and
        non-conditioning frames: memory frame selection, object-pointer selection and their
        temporal encodings then coincide, and every other step of ``track_step`` works per
        sample, so the batch gives each object what tracking it alone would. ``batch=False``
        gives one group per object.
        """
        n = self.num_objects
        if not batch or n < 2:
            return [[i] for i in range(n)]
        groups: dict[tuple[frozenset[int], frozenset[int]], list[int]] = {}
        for i in range(n):
            od = self.output_dict_per_obj[i]
            key = (frozenset(od["cond_frame_outputs"]), frozenset(od["non_cond_frame_outputs"]))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def merge_banks(self, group: list[int]) -> OutputDict:
        """One batched memory bank ``[B, ...]`` for a group of objects (only the entries that
        ``track_step`` reads: memories, their position encodings and object pointers)."""
        bank = empty_output_dict()
        dicts = [self.output_dict_per_obj[i] for i in group]
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


def drop_around(non_cond: dict[int, TrackStepOutput], frame_idx: int, radius: int) -> None:
    """Remove the entries of frames ``frame_idx - radius .. frame_idx + radius``."""
    for t in range(frame_idx - radius, frame_idx + radius + 1):
        non_cond.pop(t, None)


def stale_frames(
    non_cond: dict[int, TrackStepOutput], frame_idx: int, *, reverse: bool, window: int
) -> list[int]:
    """Frames of ``non_cond`` more than ``window`` frames behind ``frame_idx`` (in the
    direction of the pass): no later frame of the pass attends to them."""
    return [t for t in non_cond if (t > frame_idx + window if reverse else t < frame_idx - window)]


def select_object(out: TrackStepOutput, b: int) -> TrackStepOutput:
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
