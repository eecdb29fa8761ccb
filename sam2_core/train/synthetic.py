"""Procedural training clips (moving coloured shapes) for benchmarks, tests and dry runs.

Produces batches with the same fields as ``sam2_core.data.loader.collate.BatchedVideo`` without any
files, deterministically from ``(seed, rank, epoch, position)``, so a resumed run continues with
exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sam2_core.data.loader.collate import BatchedVideo

#: synthetic video numbers start here (far above any dataset's) and interleave ranks
SYNTHETIC_VIDEO_BASE = 1 << 40
MAX_RANKS = 4096

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def make_clip(
    *, num_frames: int, num_objects: int, size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One clip: normalised frames ``[T, 3, S, S]`` and object masks ``[T, O, S, S]`` (bool).

    Each object is an ellipse or a rectangle of its own colour moving on a straight line over a
    textured background; later objects occlude earlier ones (masks stay per object, amodal-free).
    """
    g = generator
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    xs = xs.float() / size
    ys = ys.float() / size
    bg = torch.rand(3, 1, 1, generator=g) * 0.5
    texture = 0.1 * torch.sin(xs * (6 + 10 * torch.rand(1, generator=g)) * math.pi)
    frames = (bg + texture).expand(num_frames, 3, size, size).clone()
    masks = torch.zeros(num_frames, num_objects, size, size, dtype=torch.bool)
    for o in range(num_objects):
        color = torch.rand(3, 1, generator=g) * 0.6 + 0.4
        radius = 0.12 + 0.15 * torch.rand(2, generator=g)
        start = 0.25 + 0.5 * torch.rand(2, generator=g)
        velocity = (torch.rand(2, generator=g) - 0.5) * 0.1
        is_ellipse = bool(torch.rand(1, generator=g) < 0.5)
        for t in range(num_frames):
            cx, cy = (start + velocity * t).tolist()
            rx, ry = radius.tolist()
            if is_ellipse:
                m = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
            else:
                m = ((xs - cx).abs() <= rx) & ((ys - cy).abs() <= ry)
            masks[t, o] = m
            frames[t][:, m] = color.expand(3, int(m.sum()))
    frames = (frames.clamp(0, 1) - _MEAN) / _STD
    return frames, masks


class SyntheticLoader:
    """Endless-per-epoch iterable of :class:`BatchedVideo` with a resumable position.

    ``len(loader)`` batches per epoch; batch ``i`` of epoch ``e`` on ``rank`` is a pure function of
    ``(seed, rank, e, i)``.
    """

    def __init__(
        self,
        *,
        resolution: int = 128,
        num_frames: int = 3,
        max_num_objects: int = 2,
        batch_size: int = 1,
        batches_per_epoch: int = 50,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        start_position: int = 0,
    ) -> None:
        self.resolution = resolution
        self.num_frames = num_frames
        self.num_objects = max_num_objects
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.rank = rank
        self.seed = seed
        self.epoch = epoch
        self.position = start_position

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _batch(self, index: int) -> BatchedVideo:
        g = torch.Generator().manual_seed(
            hash((self.seed, self.rank, self.epoch, index)) & 0x7FFF_FFFF
        )
        frames, masks, idx = [], [], []
        for v in range(self.batch_size):
            f, m = make_clip(
                num_frames=self.num_frames,
                num_objects=self.num_objects,
                size=self.resolution,
                generator=g,
            )
            frames.append(f)
            masks.append(m)
            t = torch.arange(self.num_frames).view(-1, 1).expand(-1, self.num_objects)
            idx.append(torch.stack([t, torch.full_like(t, v)], dim=-1))
        obj_to_frame_idx = torch.cat(idx, dim=1).to(torch.int32)
        t_idx, vid = obj_to_frame_idx.long().unbind(-1)
        # Every synthetic clip is a new video: a number unique per (epoch, batch, clip, rank).
        clip = (self.epoch * self.batches_per_epoch + index) * self.batch_size + vid
        video_number = SYNTHETIC_VIDEO_BASE + clip * MAX_RANKS + self.rank
        obj_id = torch.arange(obj_to_frame_idx.shape[1]).expand_as(t_idx)
        size = torch.full_like(t_idx, self.resolution)
        return BatchedVideo(
            img_batch=torch.stack(frames, dim=1),
            masks=torch.cat(masks, dim=1),
            obj_to_frame_idx=obj_to_frame_idx,
            unique_objects_identifier=torch.stack([video_number, obj_id, t_idx], dim=-1),
            frame_orig_size=torch.stack([size, size], dim=-1),
            dict_key="synthetic",
            video_ids=[f"synthetic-{index}-{v}" for v in range(self.batch_size)],
        )

    def __iter__(self) -> Iterator[BatchedVideo]:
        """The rest of the current epoch; afterwards the loader moves on to the next epoch."""
        while self.position < self.batches_per_epoch:
            batch = self._batch(self.position)
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}
