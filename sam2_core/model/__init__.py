"""SAM 2.1 in sam2_core: the model (:mod:`.sam2`), its building blocks (:mod:`.nn`), configs and
checkpoints in the official format (:mod:`.build`) and the video predictor (:mod:`.predictor`).

The model imports nothing from the rest of sam2_core except ``storage``.
"""

from sam2_core.model.build import (
    MODEL_NAMES,
    CheckpointError,
    build_model,
    export_checkpoint,
    load_checkpoint,
    resolve_device,
)
from sam2_core.model.predictor import InferenceState, VideoPredictor
from sam2_core.model.sam2 import NO_OBJ_SCORE, SAM2Base

__all__ = [
    "MODEL_NAMES",
    "NO_OBJ_SCORE",
    "CheckpointError",
    "InferenceState",
    "SAM2Base",
    "VideoPredictor",
    "build_model",
    "export_checkpoint",
    "load_checkpoint",
    "resolve_device",
]
