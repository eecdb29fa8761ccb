"""Typed records every reader returns and every consumer (sharding, training, evaluation) uses.

A :class:`VideoRecord` is one video (an image dataset is a one-frame video): its frames in
order, keyed by their *original* frame index (SA-V frame 00004 is index 4), and its objects with
masks that are decoded only when asked for.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sam2_core.data.readers.rle import decode_rle, encode_rle


class DataError(ValueError):
    """Bad input data. The message always names the file (or video) and the problem."""


class LazyMask(Protocol):
    """A binary mask that is decoded on demand."""

    def decode(self) -> np.ndarray:
        """Return the mask as ``bool [H, W]``."""
        ...

    def to_rle(self) -> dict[str, Any]:
        """Return COCO compressed RLE ``{"size": [h, w], "counts": str}``."""
        ...


@dataclass(frozen=True)
class RleMask:
    """A mask stored as COCO compressed RLE (decoded with pycocotools)."""

    rle: dict[str, Any]

    def decode(self) -> np.ndarray:
        return decode_rle(self.rle)

    def to_rle(self) -> dict[str, Any]:
        return self.rle

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.rle["size"]
        return int(h), int(w)


@dataclass(frozen=True)
class ArrayMask:
    """A mask already in memory as ``bool [H, W]``."""

    array: np.ndarray

    def decode(self) -> np.ndarray:
        return self.array.astype(bool, copy=False)

    def to_rle(self) -> dict[str, Any]:
        return encode_rle(self.decode())


@dataclass(frozen=True)
class CallableMask:
    """A mask produced by a loader function (e.g. reading a PNG only when needed)."""

    loader: Callable[[], np.ndarray]

    def decode(self) -> np.ndarray:
        return np.asarray(self.loader()).astype(bool, copy=False)

    def to_rle(self) -> dict[str, Any]:
        return encode_rle(self.decode())


@dataclass
class VideoObject:
    """One tracked object: ``masks[frame_index]`` for every annotated frame (empty if absent)."""

    obj_id: int
    masks: dict[int, LazyMask] = field(default_factory=dict)


@dataclass
class VideoRecord:
    """One video.

    Attributes:
        video_id: unique id, safe as a file name (no path separators).
        height, width: frame size in pixels.
        frame_indices: sorted original frame indices of the frames that have images.
        annotated_indices: sorted frame indices that carry annotations (subset of frames in
            SA-V val/test, where images are 24 fps and masks 6 fps).
        objects: ``obj_id -> VideoObject``.
        load_image_bytes: returns the encoded image (JPEG) of a frame index, as stored.
        source: where the record came from (a path or URL), for error messages.
    """

    video_id: str
    height: int
    width: int
    frame_indices: list[int]
    annotated_indices: list[int]
    objects: dict[int, VideoObject]
    load_image_bytes: Callable[[int], bytes]
    source: str = ""
    split: str = "train"

    def image_bytes(self, frame_index: int) -> bytes:
        return self.load_image_bytes(frame_index)

    def image(self, frame_index: int) -> np.ndarray:
        """Decoded RGB frame ``uint8 [H, W, 3]``."""
        from PIL import Image

        with Image.open(io.BytesIO(self.image_bytes(frame_index))) as im:
            return np.asarray(im.convert("RGB"))

    def mask(self, obj_id: int, frame_index: int) -> np.ndarray:
        """Mask of an object on a frame, ``bool [H, W]``; all False where not annotated."""
        m = self.objects[obj_id].masks.get(frame_index)
        if m is None:
            return np.zeros((self.height, self.width), dtype=bool)
        return m.decode()

    @property
    def obj_ids(self) -> list[int]:
        return sorted(self.objects)


def check_video_id(video_id: str, *, source: str = "") -> str:
    """Reject ids that would escape an output directory (path separators, '..', empty)."""
    bad = (not video_id) or ("/" in video_id) or ("\\" in video_id) or video_id in {".", ".."}
    if bad or "\x00" in video_id:
        where = f" in {source}" if source else ""
        raise DataError(f"invalid video id {video_id!r}{where}: must be a plain file name")
    return video_id
