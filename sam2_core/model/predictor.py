"""Video object segmentation with SAM 2.1: prompt objects on any frame, propagate through a video.

:class:`VideoPredictor` wraps a :class:`~sam2_core.model.sam2.SAM2Base` and follows the
semantics of Meta's ``SAM2VideoPredictor`` (sam2 1.1): every object has its own memory bank;
prompted frames are conditioning frames; memories are stored in bfloat16; masks are returned at
the video resolution by bilinear resizing of the low-resolution (``S/4``) logits.

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

The predictor is assembled from mixins, one concept per module (their public names are
re-exported here): :mod:`.video_frames` (decoding and preprocessing frames),
:mod:`.video_state` (:class:`InferenceState`), :mod:`.video_base` (settings, inference context,
objects), :mod:`.video_prompts` (masks, clicks, boxes, commit), :mod:`.video_propagation`
(``propagate_in_video``), :mod:`.video_batched` (objects tracked as one batch),
:mod:`.video_steps` (model calls), :mod:`.video_memory` (memory-bank hygiene) and
:mod:`.video_outputs` (video-resolution masks, hole filling).
"""

from __future__ import annotations

from sam2_core.model.video_frames import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameSource,
    make_frame_source,
    preprocess_frame,
)
from sam2_core.model.video_outputs import fill_holes_in_mask_scores
from sam2_core.model.video_propagation import PropagationMixin
from sam2_core.model.video_state import InferenceState

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrameSource",
    "InferenceState",
    "VideoPredictor",
    "fill_holes_in_mask_scores",
    "make_frame_source",
    "preprocess_frame",
]


class VideoPredictor(PropagationMixin):
    """Interactive video object segmentation on top of a
    :class:`~sam2_core.model.sam2.SAM2Base`.

    Args:
        model: the SAM 2.1 model (any mode; calls run it in eval mode and restore the mode).
        offload_video_to_cpu: decode frames on demand on the CPU and keep none; otherwise
            preprocessed frames are cached on the model's device once decoded.
        offload_state_to_cpu: store per-frame outputs (masks, memories) on the CPU.
        fill_hole_area: fill background holes up to this area (pixels of the low-res mask) in
            the predicted masks (0 = off, as in the golden reference).
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
