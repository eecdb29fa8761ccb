"""SAM 2.1 in sam2_core: model, configs, checkpoints (official format) and video predictor.

Heavy submodules are imported on first attribute access so that ``import sam2_core.model``
stays cheap for CLI start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam2_core.model.build import (
        MODEL_NAMES,
        CheckpointError,
        build_model,
        export_checkpoint,
        load_checkpoint,
    )
    from sam2_core.model.predictor import InferenceState, VideoPredictor
    from sam2_core.model.sam2 import NO_OBJ_SCORE, SAM2Base

_EXPORTS = {
    "MODEL_NAMES": "sam2_core.model.build",
    "CheckpointError": "sam2_core.model.build",
    "build_model": "sam2_core.model.build",
    "export_checkpoint": "sam2_core.model.build",
    "load_checkpoint": "sam2_core.model.build",
    "VideoPredictor": "sam2_core.model.predictor",
    "InferenceState": "sam2_core.model.predictor",
    "SAM2Base": "sam2_core.model.sam2",
    "NO_OBJ_SCORE": "sam2_core.model.sam2",
}

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
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sam2_core.model' has no attribute {name!r}")
    return getattr(import_module(module), name)
