"""Video object segmentation with SAM 2.1: prompt objects on any frame, propagate through a video.

:class:`VideoPredictor` holds a :class:`~sam2_core.model.sam2.SAM2Base` and follows the
semantics of Meta's ``SAM2VideoPredictor`` (sam2 1.1): every object has its own memory bank;
prompted frames are conditioning frames; memories are stored in bfloat16; masks are returned at
the video resolution by bilinear resizing of the low-resolution (``S/4``) logits.

It composes three parts: the frame source (:mod:`.frames`, frames decoded and preprocessed on
demand), the inference state with the per-object memory banks (:mod:`.state`) and the output
post-processing (:mod:`.outputs`: video-resolution masks, hole filling, non-overlap).

Batching: each frame's image features are computed once and shared by all objects. While
propagating, objects whose memory banks hold the same frames (e.g. all prompted on the same
frame, the semi-supervised VOS case) go through ``track_step`` together as one batch
``B = number of objects``; this gives the same memories and masks as tracking them one by one
(every step is per-sample), at a fraction of the cost. Objects whose banks differ (prompted on
different frames, or corrected separately) are tracked one by one with batch size 1, like the
official predictor.

Typical use::

    predictor = VideoPredictor(build_model("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt"))
    state = predictor.init_state("video_frames/")          # or a list of uint8 [H, W, 3] arrays
    predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=first_mask)
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=2, points=[[x, y]], labels=[1])
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
        masks = logits > 0                                  # [O, 1, H, W]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2_core.model.predictor.frames import make_frame_source
from sam2_core.model.predictor.outputs import MaskPostprocessor
from sam2_core.model.predictor.state import (
    InferenceState,
    drop_around,
    select_object,
    stale_frames,
)
from sam2_core.model.sam2 import NO_OBJ_SCORE, OutputDict, SAM2Base, TrackStepOutput


class VideoPredictor:
    """Interactive video object segmentation with a :class:`~sam2_core.model.sam2.SAM2Base`.

    Args:
        model: the SAM 2.1 model (any mode; calls run it in eval mode and restore the mode).
        offload_video_to_cpu: decode frames on demand on the CPU and keep none; otherwise
            preprocessed frames are cached on the model's device once decoded.
        offload_state_to_cpu: store per-frame outputs (masks, memories) on the CPU.
        fill_hole_area: fill background holes up to this area (pixels of the low-res mask) in
            the predicted masks; 8 as in Meta's ``build_sam2_video_predictor`` (which applies it
            only where its CUDA extension loads; here it runs on any device); 0 = off.
        apply_postprocessing: the official video-predictor settings: dynamic multimask via
            stability (0.05 / 0.98) and binarised click masks for the memory encoder.
        non_overlap_masks: resolve overlaps between objects in the returned masks.
        clear_non_cond_mem_around_input: drop non-conditioning memories next to new prompts.
        add_all_frames_to_correct_as_cond: corrected (already tracked) frames become
            conditioning frames.
        bounded_memory: while propagating, drop non-conditioning outputs that lie outside the
            memory/pointer window of the frames still to come (memory stays bounded on long
            videos; masks of dropped frames are no longer available for correction clicks).
        autocast: bf16 autocast on CUDA (default: on when the model is on a GPU).
        batch_objects: track objects whose memory banks hold the same frames as one batch
            (same results; False: always one object at a time, like the official predictor).
    """

    def __init__(
        self,
        model: SAM2Base,
        *,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        fill_hole_area: int = 8,
        apply_postprocessing: bool = True,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        bounded_memory: bool = False,
        autocast: bool | None = None,
        batch_objects: bool = True,
    ) -> None:
        self.model = model
        self.outputs = MaskPostprocessor(
            fill_hole_area=fill_hole_area, non_overlap_masks=non_overlap_masks
        )
        self.offload_video_to_cpu = offload_video_to_cpu
        self.offload_state_to_cpu = offload_state_to_cpu
        self.apply_postprocessing = apply_postprocessing
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

    @property
    def fill_hole_area(self) -> int:
        return self.outputs.fill_hole_area

    @property
    def non_overlap_masks(self) -> bool:
        return self.outputs.non_overlap_masks

    # ================================================================== state

    def init_state(
        self, frames: Any, *, video_size: tuple[int, int] | None = None
    ) -> InferenceState:
        """Create the state of a video.

        Args:
            frames: list of uint8 ``[H, W, 3]`` RGB arrays, a folder of frames named by index
                (``00000.jpg`` ...), a :class:`~sam2_core.model.predictor.frames.VideoFrames`
                (e.g. a dataset's ``VideoRecord``), or a normalised ``[T, 3, S, S]`` tensor.
            video_size: ``(H, W)`` of the original video; required for tensors only.
        """
        device = self.device
        cache = None if self.offload_video_to_cpu else device
        source = make_frame_source(
            frames, image_size=self.image_size, cache_device=cache, video_size=video_size
        )
        return InferenceState(
            frames=source,
            num_frames=len(source),
            video_height=source.height,
            video_width=source.width,
            device=device,
            storage_device=torch.device("cpu") if self.offload_state_to_cpu else device,
        )

    def reset_state(self, state: InferenceState) -> None:
        """Remove every object, prompt and output (the frames stay)."""
        state.reset()

    def tracking_groups(self, state: InferenceState) -> list[list[int]]:
        """Object indices tracked together as one batch each (see
        :meth:`InferenceState.tracking_groups`); one object per group without batching or with
        ``non_overlap_masks_for_mem_enc`` (the memory encoder would then mix objects)."""
        batch = self.batch_objects and not self.model.non_overlap_masks_for_mem_enc
        return state.tracking_groups(batch=batch)

    # ================================================================== inference context

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

    # ================================================================== prompts

    def add_new_mask(
        self, state: InferenceState, *, frame_idx: int, obj_id: int, mask: Any
    ) -> tuple[int, list[int], torch.Tensor]:
        """Prompt ``obj_id`` on ``frame_idx`` with a binary mask ``[H, W]`` (video resolution).

        Returns ``(frame_idx, obj_ids, video_res_masks [O, 1, H, W] logits)`` of that frame.
        """
        state.check_frame(frame_idx)
        with self._inference():
            obj_idx = state.obj_idx(obj_id)
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
        state.check_frame(frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None and box is None:
            raise ValueError("give points (with labels) or a box")
        with self._inference():
            obj_idx = state.obj_idx(obj_id)
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
        video_res = self.outputs.consolidate(state, frame_idx, is_cond=is_cond)
        return frame_idx, list(state.obj_ids), self.outputs.to_video_res(state, video_res)

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
                        state.clear_non_cond_around(obj_idx, frame_idx, self._clear_radius())
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

    # ================================================================== propagation

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
            groups = self.tracking_groups(state)
            starts: dict[int, int] = {}
            if from_first_prompt:
                for g in groups:  # members of a group share their conditioning frames
                    cond = state.output_dict_per_obj[g[0]]["cond_frame_outputs"]
                    starts[g[0]] = max(cond) if reverse else min(cond)
            banks = {g[0]: state.merge_banks(g) for g in groups if len(g) > 1}
            flat = [i for g in groups for i in g]
            unsort = None if flat == sorted(flat) else torch.tensor(flat).argsort()
            for frame_idx in order:
                masks: list[torch.Tensor] = []
                for g in groups:
                    start = starts.get(g[0], frame_idx)
                    if frame_idx > start if reverse else frame_idx < start:
                        masks.append(_absent_logits(state, g, start))
                    elif len(g) == 1:
                        masks.append(self._propagate_object(state, g[0], frame_idx, reverse))
                    else:
                        masks.append(
                            self._propagate_group(state, g, banks[g[0]], frame_idx, reverse)
                        )
                all_masks = torch.cat(masks, dim=0) if len(masks) > 1 else masks[0]
                if unsort is not None:  # groups are not in object order
                    all_masks = all_masks[unsort]
                yield frame_idx, list(state.obj_ids), self.outputs.to_video_res(state, all_masks)

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
        state.check_frame(start_frame_idx)
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
                state.clear_non_cond_around(obj_idx, frame_idx, self._clear_radius())
        else:
            _, pred = self._track_unprompted(state, out_dict, frame_idx, reverse=reverse)
            if self.bounded_memory:
                state.trim_outputs(obj_idx, frame_idx, reverse=reverse, window=self._window())
        state.frames_tracked_per_obj[obj_idx][frame_idx] = {"reverse": reverse}
        return pred

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
                drop_around(bank["non_cond_frame_outputs"], frame_idx, self._clear_radius())
                for i in group:
                    state.clear_non_cond_around(i, frame_idx, self._clear_radius())
        else:
            current_out, pred = self._track_unprompted(
                state, bank, frame_idx, reverse=reverse, batch_size=len(group)
            )
            for b, i in enumerate(group):
                out_i = select_object(current_out, b)
                state.output_dict_per_obj[i]["non_cond_frame_outputs"][frame_idx] = out_i
            if self.bounded_memory:
                window = self._window()
                non_cond = bank["non_cond_frame_outputs"]
                for t in stale_frames(non_cond, frame_idx, reverse=reverse, window=window):
                    del non_cond[t]
                for i in group:
                    state.trim_outputs(i, frame_idx, reverse=reverse, window=window)
        for i in group:
            state.frames_tracked_per_obj[i][frame_idx] = {"reverse": reverse}
        return pred

    def _track_unprompted(
        self,
        state: InferenceState,
        bank: OutputDict,
        frame_idx: int,
        *,
        reverse: bool,
        batch_size: int = 1,
    ) -> tuple[TrackStepOutput, torch.Tensor]:
        """Track a frame without prompts from the memories in ``bank`` (one object's or a
        group's) and store it there as a non-conditioning frame; returns what
        :meth:`_run_single_frame_inference` returns."""
        current_out, pred = self._run_single_frame_inference(
            state, output_dict=bank, frame_idx=frame_idx, reverse=reverse, batch_size=batch_size
        )
        bank["non_cond_frame_outputs"][frame_idx] = current_out
        return current_out, pred

    def _clear_radius(self) -> int:
        """Frames around a prompt whose non-conditioning memories are dropped."""
        return int(self.model.memory_temporal_stride_for_eval * self.model.num_maskmem)

    def _window(self) -> int:
        """How far back (in frames) a frame attends: memories and object pointers."""
        m = self.model
        return max(
            (m.num_maskmem - 1) * m.memory_temporal_stride_for_eval + 1,
            m.max_obj_ptrs_in_encoder,
        )

    # ================================================================== model calls

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
        reverse: bool,
        is_init_cond_frame: bool = False,
        point_inputs: dict[str, torch.Tensor] | None = None,
        mask_inputs: torch.Tensor | None = None,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: torch.Tensor | None = None,
        batch_size: int = 1,
    ) -> tuple[TrackStepOutput, torch.Tensor]:
        """One tracking step of ``batch_size`` objects sharing ``output_dict``; returns
        ``(compact stored output, pred_masks [B, 1, S/4, S/4] on the compute device)``.
        Memories are stored in bf16 on the storage device. The defaults are a step without
        prompts that also encodes the frame's memory (propagation)."""
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
        pred_masks = self.outputs.fill_holes(out["pred_masks"].float())
        compact = {
            "maskmem_features": maskmem,
            "maskmem_pos_enc": state.shared_maskmem_pos_enc(out["maskmem_pos_enc"]),
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
        return maskmem, state.shared_maskmem_pos_enc(pos)


def _absent_logits(state: InferenceState, group: list[int], cond_frame: int) -> torch.Tensor:
    """``NO_OBJ_SCORE`` logits ``[B, 1, h, w]`` (low-res size) for objects not yet tracked."""
    ref = state.output_dict_per_obj[group[0]]["cond_frame_outputs"][cond_frame]["pred_masks"]
    return torch.full(
        (len(group), 1, *ref.shape[-2:]), NO_OBJ_SCORE, dtype=torch.float32, device=state.device
    )


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
