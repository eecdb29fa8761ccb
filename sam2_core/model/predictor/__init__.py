"""The SAM 2.1 video predictor: :class:`VideoPredictor` holds a model and composes a frame
source (:mod:`.frames`), the inference state with its memory banks (:mod:`.state`) and the
output post-processing (:mod:`.outputs`); :mod:`.video_predictor` has the prompts and the
propagation."""

from sam2_core.model.predictor.frames import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameSource,
    VideoFrames,
    make_frame_source,
    preprocess_frame,
)
from sam2_core.model.predictor.outputs import MaskPostprocessor, fill_holes_in_mask_scores
from sam2_core.model.predictor.state import InferenceState
from sam2_core.model.predictor.video_predictor import VideoPredictor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrameSource",
    "InferenceState",
    "MaskPostprocessor",
    "VideoFrames",
    "VideoPredictor",
    "fill_holes_in_mask_scores",
    "make_frame_source",
    "preprocess_frame",
]
