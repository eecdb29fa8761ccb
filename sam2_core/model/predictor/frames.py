"""Video frames for the predictor: decoding, preprocessing and the on-demand frame source.

The predictor takes frames from the caller in one of four forms (see :func:`make_frame_source`);
a dataset's video is any object with the :class:`VideoFrames` attributes (the data package's
``VideoRecord`` is one), so the model needs nothing from the data package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG", ".png", ".PNG")


@runtime_checkable
class VideoFrames(Protocol):
    """A decoded video the predictor can read frame by frame (e.g. a dataset record).

    ``height``/``width`` in pixels; ``frame_indices`` the original indices of the frames, in
    order; ``image(i)`` the uint8 ``[H, W, 3]`` RGB frame of original index ``i``.
    """

    height: int
    width: int
    frame_indices: list[int]

    def image(self, frame_index: int) -> np.ndarray: ...


def preprocess_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """``uint8 [H, W, 3]`` RGB -> normalised ``float32 [3, S, S]``.

    Squash-resize with PIL's bicubic filter (no aspect ratio kept), ``/255``, ImageNet
    mean/std: the official predictor's preprocessing, so JPEG frames give identical inputs.
    """
    from PIL import Image

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    resized = np.asarray(
        Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BICUBIC)
    )
    x = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot decode image ({exc})") from exc


def _frame_folder(path: Path) -> list[Path]:
    """Image files of a frame folder sorted by their integer stem (``00004.jpg`` -> 4)."""
    files = [p for p in path.iterdir() if p.suffix in _IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{path}: no JPEG/PNG frames found")
    try:
        return sorted(files, key=lambda p: int(p.stem))
    except ValueError as exc:
        raise ValueError(f"{path}: frame files must be named by frame index ({exc})") from exc


class FrameSource:
    """Frames of a video, decoded and preprocessed on demand.

    ``frame(i)`` returns the normalised ``[3, S, S]`` float32 input of frame ``i``. With
    ``cache_device`` set, preprocessed frames are kept there (fast repeated passes, memory grows
    with the video); otherwise nothing is kept and memory stays constant.
    """

    def __init__(
        self,
        loaders: Sequence[Callable[[], torch.Tensor]],
        *,
        height: int,
        width: int,
        cache_device: torch.device | None,
    ) -> None:
        self._loaders = list(loaders)
        self.height = int(height)
        self.width = int(width)
        self._cache_device = cache_device
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._loaders)

    def frame(self, idx: int) -> torch.Tensor:
        if not 0 <= idx < len(self._loaders):
            raise IndexError(f"frame index {idx} out of range [0, {len(self._loaders)})")
        hit = self._cache.get(idx)
        if hit is not None:
            return hit
        x = self._loaders[idx]()
        if self._cache_device is not None:
            x = x.to(self._cache_device)
            self._cache[idx] = x
        return x


def _tensor_frame(frames: torch.Tensor, idx: int) -> torch.Tensor:
    return frames[idx].float()


def _video_frame(video: VideoFrames, frame_index: int, image_size: int) -> torch.Tensor:
    return preprocess_frame(video.image(frame_index), image_size)


def _file_frame(path: Path, image_size: int) -> torch.Tensor:
    return preprocess_frame(_read_rgb(path), image_size)


def make_frame_source(
    frames: Any,
    *,
    image_size: int,
    cache_device: torch.device | None,
    video_size: tuple[int, int] | None = None,
) -> FrameSource:
    """Build a :class:`FrameSource` from a list of uint8 ``[H, W, 3]`` arrays, a frame folder
    (path), a :class:`VideoFrames` (e.g. a dataset's ``VideoRecord``), or an already normalised
    tensor ``[T, 3, S, S]`` (then ``video_size=(H, W)`` is required)."""
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4 or frames.shape[1:] != (3, image_size, image_size):
            raise ValueError(f"a frame tensor must be [T, 3, {image_size}, {image_size}]")
        if video_size is None:
            raise ValueError("video_size=(H, W) is required with preprocessed frame tensors")
        loaders = [partial(_tensor_frame, frames, i) for i in range(frames.shape[0])]
        return FrameSource(loaders, height=video_size[0], width=video_size[1], cache_device=None)
    if isinstance(frames, VideoFrames):
        video = frames
        loaders = [partial(_video_frame, video, i, image_size) for i in video.frame_indices]
        return FrameSource(
            loaders, height=video.height, width=video.width, cache_device=cache_device
        )
    if isinstance(frames, (str, Path)):
        files = _frame_folder(Path(frames))
        first = _read_rgb(files[0])
        loaders = [partial(_file_frame, p, image_size) for p in files]
        return FrameSource(
            loaders, height=first.shape[0], width=first.shape[1], cache_device=cache_device
        )
    if isinstance(frames, Sequence) and len(frames) > 0:
        arrays = [np.asarray(f) for f in frames]
        h, w = arrays[0].shape[:2]
        for i, a in enumerate(arrays):
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"frame {i}: expected uint8 [H, W, 3], got {a.dtype} {a.shape}")
            if a.shape[:2] != (h, w):
                raise ValueError(f"frame {i} has size {a.shape[:2]}, frame 0 has {(h, w)}")
        loaders = [partial(preprocess_frame, a, image_size) for a in arrays]
        return FrameSource(loaders, height=h, width=w, cache_device=cache_device)
    raise ValueError(
        "frames must be a non-empty list of uint8 [H, W, 3] arrays, a frame folder, "
        "a video with height, width, frame_indices and image(i) (e.g. a VideoRecord) "
        "or a [T, 3, S, S] tensor"
    )
