"""Writing predictions in the official layouts the SA-V / DAVIS evaluators read.

* SA-V: ``<root>/<video>/<obj:03d>/<frame:05d>.png``, one binary PNG per object and frame
  (mode "L", 0 / 255), objects may overlap.
* DAVIS / MOSE: ``<root>/<video>/<frame:05d>.png``, one palette PNG per frame whose indices are
  object ids (1..255), objects never overlap.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Literal

import cv2
import numpy as np

PredLayout = Literal["sav", "davis"]


def davis_palette() -> list[int]:
    """The standard DAVIS / PASCAL VOC colour map (256 RGB triplets, flattened)."""
    pal: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend((r, g, b))
    return pal


def encode_binary_png(mask: np.ndarray) -> bytes:
    """``bool [H, W]`` -> PNG bytes (mode "L", 0 / 255)."""
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 2-D arrays
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_palette_png(labels: np.ndarray) -> bytes:
    """``uint8 [H, W]`` label map -> palette PNG bytes (DAVIS colours)."""
    from PIL import Image

    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(davis_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def compose_labels(
    masks: Mapping[int, np.ndarray], scores: Mapping[int, np.ndarray] | None = None
) -> np.ndarray:
    """Non-overlapping label map ``uint8 [H, W]`` from per-object ``bool [H, W]`` masks.

    Where objects overlap, the one with the highest score (logit) wins when ``scores`` are
    given; otherwise the lowest object id wins (the official ``put_per_obj_mask`` order).
    """
    ids = sorted(masks)
    if not ids:
        raise ValueError("compose_labels needs at least one mask")
    for i in ids:
        if not 0 < i < 256:
            raise ValueError(f"object id {i} cannot be a palette index (1..255)")
    shape = masks[ids[0]].shape
    out = np.zeros(shape, np.uint8)
    if scores is None:
        for i in reversed(ids):
            out[masks[i]] = i
        return out
    stack = np.stack([np.where(masks[i], scores[i], -np.inf) for i in ids])
    best = np.argmax(stack, axis=0)
    fg = np.isfinite(np.max(stack, axis=0))
    out[fg] = np.asarray(ids, dtype=np.uint8)[best[fg]]
    return out


def frame_file(frame_index: int) -> str:
    return f"{int(frame_index):05d}.png"


def write_sav_frame(
    root: str, video: str, frame_index: int, masks: Mapping[int, np.ndarray]
) -> None:
    """Write one binary PNG per object for one frame (SA-V layout)."""
    for obj_id, m in masks.items():
        d = os.path.join(root, video, f"{int(obj_id):03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, frame_file(frame_index)), "wb") as f:
            f.write(encode_binary_png(m))


def write_davis_frame(root: str, video: str, frame_index: int, labels: np.ndarray) -> None:
    """Write one palette PNG for one frame (DAVIS layout)."""
    d = os.path.join(root, video)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, frame_file(frame_index)), "wb") as f:
        f.write(encode_palette_png(labels))
