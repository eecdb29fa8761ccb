"""Batching of augmented clips into the layout SAM 2's trainer expects (time-major).

Objects of all videos in a batch are concatenated along ``O``: object ``o`` belongs to video
``obj_to_frame_idx[t, o, 1]``; every video keeps the same objects on all its frames (an object
absent from a frame has an all-False mask), exactly like Meta's ``BatchedVideoDatapoint``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch


def video_number(video_id: str) -> int:
    """A stable non-negative int for a string video id (``unique_objects_identifier[..., 0]``)."""
    return zlib.crc32(video_id.encode("utf-8"))


@dataclass
class VideoSample:
    """One augmented clip.

    Attributes:
        images: float32 ``[T, 3, H, W]`` (normalised).
        masks: bool ``[T, O, H, W]``.
        obj_ids: the ``O`` object ids.
        frame_indices: the ``T`` original frame indices, in clip order (reversed clips too).
        video_id: the dataset's string id.
        orig_size: ``(height, width)`` of the original frames.
    """

    images: torch.Tensor
    masks: torch.Tensor
    obj_ids: list[int]
    frame_indices: list[int]
    video_id: str
    orig_size: tuple[int, int]


@dataclass
class BatchedVideo:
    """A batch of ``B`` clips of ``T`` frames with ``O`` objects in total.

    Attributes:
        img_batch: float ``[T, B, 3, H, W]``.
        masks: bool ``[T, O, H, W]``.
        obj_to_frame_idx: int32 ``[T, O, 2]``, ``(t, video index in batch)``.
        unique_objects_identifier: int64 ``[T, O, 3]``, ``(video number, object id, frame index)``.
        frame_orig_size: int64 ``[T, O, 2]``, ``(height, width)`` of the original video.
        dict_key: name of the dataset the batch came from (mixed training).
        video_ids: the ``B`` string video ids.
    """

    img_batch: torch.Tensor
    masks: torch.Tensor
    obj_to_frame_idx: torch.Tensor
    unique_objects_identifier: torch.Tensor
    frame_orig_size: torch.Tensor
    dict_key: str = "all"
    video_ids: list[str] = field(default_factory=list)
    #: shared-memory ring slots of a DataLoader worker that hold this batch's tensors
    #: (``sam2_core.data.loader.buffers``); the loader releases them when the batch is no longer used
    buffer_tokens: Any = None

    @property
    def num_frames(self) -> int:
        return int(self.img_batch.shape[0])

    @property
    def num_videos(self) -> int:
        return int(self.img_batch.shape[1])

    @property
    def flat_img_batch(self) -> torch.Tensor:
        """``[B*T, 3, H, W]``, video-major (all frames of video 0 first)."""
        return self.img_batch.transpose(0, 1).flatten(0, 1)

    @property
    def flat_obj_to_img_idx(self) -> torch.Tensor:
        """``[T, O]``: row of each object's frame in :attr:`flat_img_batch` (``b * T + t``)."""
        frame_idx = self.obj_to_frame_idx[..., 0]
        video_idx = self.obj_to_frame_idx[..., 1]
        return video_idx * self.num_frames + frame_idx

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> BatchedVideo:
        kwargs: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kwargs[f.name] = fn(v) if isinstance(v, torch.Tensor) else v
        return BatchedVideo(**kwargs)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BatchedVideo:
        """A copy with every tensor moved to ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> BatchedVideo:
        """Used by ``DataLoader(pin_memory=True)``: pinned copies, so a worker's shared buffers
        are handed back at once."""
        pinned = self._map(lambda t: t.pin_memory())
        if self.buffer_tokens is not None:
            pinned.buffer_tokens = None
            self.buffer_tokens.release()
        return pinned


def collate_videos(
    samples: list[VideoSample],
    *,
    dict_key: str = "all",
    img_batch: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> BatchedVideo:
    """Stack clips into a :class:`BatchedVideo`.

    Args:
        samples: ``B`` clips with the same ``T`` and image size.
        dict_key: dataset name stored on the batch.
        img_batch: optional ``[T, B, 3, H, W]`` that already holds ``samples[b].images`` at
            ``[:, b]`` (the loader writes clips there directly to avoid a copy).
        masks: optional bool ``[T, O, H, W]`` buffer (``O`` objects of all clips) to
            concatenate the masks into; a single clip's masks are used as they are.
    """
    if not samples:
        raise ValueError("collate_videos needs at least one sample")
    num_t = samples[0].images.shape[0]
    for s in samples:
        if s.images.shape[0] != num_t or s.masks.shape[0] != num_t:
            raise ValueError(
                f"all clips of a batch need the same number of frames: {s.video_id} has "
                f"{s.images.shape[0]}, expected {num_t}"
            )
    if img_batch is None:
        if len(samples) == 1:
            img_batch = samples[0].images.unsqueeze(1)  # a view, no copy
        else:
            img_batch = torch.stack([s.images for s in samples], dim=1)
    if len(samples) == 1:
        masks = samples[0].masks  # no copy
    else:
        masks = torch.cat([s.masks for s in samples], dim=1, out=masks)
    num_o = masks.shape[1]
    obj_to_frame = torch.empty((num_t, num_o, 2), dtype=torch.int32)
    ident = torch.empty((num_t, num_o, 3), dtype=torch.int64)
    orig = torch.empty((num_t, num_o, 2), dtype=torch.int64)
    o = 0
    times = torch.arange(num_t)
    for b, s in enumerate(samples):
        n = len(s.obj_ids)
        if s.masks.shape[1] != n:
            raise ValueError(f"{s.video_id}: {s.masks.shape[1]} masks for {n} object ids")
        if n == 0:
            continue
        frames = torch.tensor(s.frame_indices, dtype=torch.int64)
        obj_to_frame[:, o : o + n, 0] = times[:, None].to(torch.int32)
        obj_to_frame[:, o : o + n, 1] = b
        ident[:, o : o + n, 0] = video_number(s.video_id)
        ident[:, o : o + n, 1] = torch.tensor(s.obj_ids, dtype=torch.int64)[None, :]
        ident[:, o : o + n, 2] = frames[:, None]
        orig[:, o : o + n, 0] = s.orig_size[0]
        orig[:, o : o + n, 1] = s.orig_size[1]
        o += n
    return BatchedVideo(
        img_batch=img_batch,
        masks=masks,
        obj_to_frame_idx=obj_to_frame,
        unique_objects_identifier=ident,
        frame_orig_size=orig,
        dict_key=dict_key,
        video_ids=[s.video_id for s in samples],
    )
