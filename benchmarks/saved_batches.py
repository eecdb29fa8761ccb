"""The batches our benchmarks hand to Meta's trainer: the fields of our ``BatchedVideo`` that
Meta's ``BatchedVideoDatapoint`` needs, as a plain dict of tensors (``torch.save``-able with
``weights_only``), so that both trainers run on exactly the same data.

Imported by the scripts of this folder (``train_step.py``, ``trajectory.py``; their own folder
is ``sys.path[0]``) and by ``gpu/kit.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BATCH_FIELDS = (
    "img_batch",
    "masks",
    "obj_to_frame_idx",
    "unique_objects_identifier",
    "frame_orig_size",
)


def plain_batches(batches: Iterable[Any]) -> list[dict[str, Any]]:
    """Each ``BatchedVideo`` as ``{field: tensor}`` over ``BATCH_FIELDS``."""
    return [{k: getattr(b, k) for k in BATCH_FIELDS} for b in batches]


def save_synthetic_batches(*, res: int, frames: int, objects: int, count: int, path: str) -> None:
    """``count`` synthetic clips (``SyntheticLoader``, torch seed 0) of ``frames`` frames at
    ``res`` px with up to ``objects`` objects, saved as plain batches to ``path``."""
    import torch

    from sam2_core.train.synthetic import SyntheticLoader

    torch.manual_seed(0)
    loader = SyntheticLoader(resolution=res, num_frames=frames, max_num_objects=objects)
    torch.save(plain_batches(b for b, _ in zip(loader, range(count))), path)
