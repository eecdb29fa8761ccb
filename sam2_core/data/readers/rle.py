"""COCO RLE encode/decode through pycocotools (column-major, compressed counts)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode ``{"size": [h, w], "counts": str|bytes}`` to ``bool [H, W]``."""
    counts = rle["counts"]
    obj = {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(obj).astype(bool)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode ``bool [H, W]`` to compressed RLE with ``counts`` as ``str`` (JSON-safe)."""
    arr = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_utils.encode(arr)
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode() if isinstance(counts, bytes) else counts,
    }


def rle_area(rle: dict[str, Any]) -> int:
    counts = rle["counts"]
    obj = {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    return int(mask_utils.area(obj))
