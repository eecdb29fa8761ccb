"""Clip sources: the videos a training clip is read from (Parquet shards or raw records).

A source lists its videos as plain :class:`VideoMeta` (safe to carry across a fork) and opens
its files and filesystems lazily in each process that reads from it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam2_core.data.loader.config import SourceConfig
from sam2_core.data.readers.formats import detect_format, iter_videos
from sam2_core.data.readers.records import DataError, VideoRecord
from sam2_core.data.readers.shards import ShardIndex, ShardReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoMeta:
    """What the epoch plan needs to know about a video (plain data: crosses forks safely)."""

    video_id: str
    num_frames: int
    height: int
    width: int


class ClipSource:
    """A dataset of videos a clip can be read from (base class)."""

    url: str
    videos: list[VideoMeta]
    #: Whether :class:`ClipStream` may read the next clips on a background thread while the
    #: current one is transformed (the source's reads must be pure and safe on a second thread).
    prefetch: bool = False

    def visible(self, video: int, pos: int) -> Sequence[int]:
        """Object ids with a non-empty mask on annotated frame ``pos`` of video ``video``."""
        raise NotImplementedError

    def read(
        self, video: int, positions: Sequence[int], obj_ids: Sequence[int]
    ) -> tuple[list[bytes], list[np.ndarray], list[int]]:
        """JPEG bytes, bool ``[O, H, W]`` masks and original frame indices of ``positions``."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        return {}


class ShardClipSource(ClipSource):
    """Clips from a ``sam2kf shard`` directory (read ahead by :class:`ClipStream`: one ranged
    read per clip, so hiding its latency behind the transform pays most on object stores)."""

    prefetch = True

    def __init__(self, url: str, *, split: str | None = "train") -> None:
        self.url = url.rstrip("/")
        index = ShardIndex.open(self.url)
        self.manifest = index.manifest
        self.entries = index.select(split)
        if not self.entries:
            raise DataError(f"{self.url}: no videos in split {split!r}")
        self.videos = [VideoMeta(e.video_id, e.num_frames, e.height, e.width) for e in self.entries]
        self._reader: Any = None
        self._pid = -1

    def _get_reader(self) -> Any:
        if self._reader is None or self._pid != os.getpid():
            # A fresh reader (and filesystem) per process: never reuse one across a fork.
            self._reader = ShardReader(self.url, self.manifest)
            self._pid = os.getpid()
        return self._reader

    def visible(self, video: int, pos: int) -> Sequence[int]:
        return self.entries[video].visible[pos]

    def read(
        self, video: int, positions: Sequence[int], obj_ids: Sequence[int]
    ) -> tuple[list[bytes], list[np.ndarray], list[int]]:
        from pycocotools import mask as mask_utils

        e = self.entries[video]
        rows = [e.first_row + p for p in positions]
        table = self._get_reader().read_rows(e.shard, rows, ["frame_index", "image", "objects"])
        images = [bytes(b) for b in table.column("image").to_pylist()]
        frames = [int(f) for f in table.column("frame_index").to_pylist()]
        masks = []
        for objs in table.column("objects").to_pylist():
            by_id = {int(o["obj_id"]): o["counts"] for o in objs or []}
            rles = [
                {"size": [e.height, e.width], "counts": by_id[oid].encode()}
                if oid in by_id
                else _empty_rle(e.height, e.width)
                for oid in obj_ids
            ]
            if rles:
                # One call for all objects: [H, W, O] column-major, viewed as [O, H, W] without
                # a copy (the transforms warp column-major planes directly).
                m = mask_utils.decode(rles).transpose(2, 0, 1).view(bool)
            else:
                m = np.zeros((0, e.height, e.width), dtype=bool)
            masks.append(m)
        return images, masks, frames

    def stats(self) -> dict[str, int]:
        r = self._reader
        return {"bytes_read": r.bytes_read, "row_groups_read": r.row_groups_read} if r else {}


def _empty_rle(h: int, w: int) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    return dict(mask_utils.encode(np.zeros((h, w, 1), dtype=np.uint8, order="F"))[0])


class RecordClipSource(ClipSource):
    """Clips from :class:`VideoRecord` objects: a raw dataset URL (JPEG frame folders, DAVIS,
    SA-V raw after extraction, SA-1B ...) read through ``iter_videos``, or records in memory.

    With a URL, every process lists the dataset itself on first use, so each worker opens its
    own filesystem.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        records: list[VideoRecord] | None = None,
        fmt: str = "auto",
        split: str | None = "train",
    ) -> None:
        if (url is None) == (records is None):
            raise ValueError("RecordClipSource needs exactly one of url or records")
        self.url = url or "<records>"
        self._fmt = fmt
        self._split = split
        self._pid = os.getpid()
        recs = records if records is not None else self._list()
        self._records: list[VideoRecord] | None = recs
        self.videos = [
            VideoMeta(r.video_id, len(r.annotated_indices), r.height, r.width) for r in recs
        ]
        if not self.videos:
            raise DataError(f"{self.url}: no videos in split {split!r}")
        self._from_url = url is not None
        self._visible_cache: dict[tuple[int, int], list[int]] = {}
        self.bytes_read = 0

    def _list(self) -> list[VideoRecord]:
        try:
            recs = list(iter_videos(self.url, fmt=self._fmt, split=self._split))
        except DataError:
            if self._split != "train":
                raise
            # Raw folders often have no split list at all: then every video is for training.
            log.warning("%s: no 'train' video list; training on every video", self.url)
            recs = list(iter_videos(self.url, fmt=self._fmt, split=None))
        return sorted(recs, key=lambda r: r.video_id)

    def _recs(self) -> list[VideoRecord]:
        if self._from_url and self._pid != os.getpid():
            self._records = self._list()
            self._pid = os.getpid()
            if [r.video_id for r in self._records] != [v.video_id for v in self.videos]:
                raise DataError(f"{self.url}: the dataset changed while training")
        assert self._records is not None
        return self._records

    def visible(self, video: int, pos: int) -> Sequence[int]:
        key = (video, pos)
        if key not in self._visible_cache:
            rec = self._recs()[video]
            fi = rec.annotated_indices[pos]
            self._visible_cache[key] = [
                o for o in rec.obj_ids if fi in rec.objects[o].masks and rec.mask(o, fi).any()
            ]
        return self._visible_cache[key]

    def read(
        self, video: int, positions: Sequence[int], obj_ids: Sequence[int]
    ) -> tuple[list[bytes], list[np.ndarray], list[int]]:
        rec = self._recs()[video]
        frames = [rec.annotated_indices[p] for p in positions]
        images = [rec.image_bytes(fi) for fi in frames]
        self.bytes_read += sum(len(b) for b in images)
        masks = [
            np.stack([rec.mask(o, fi) for o in obj_ids])
            if obj_ids
            else np.zeros((0, rec.height, rec.width), bool)
            for fi in frames
        ]
        return images, masks, frames

    def stats(self) -> dict[str, int]:
        return {"bytes_read": self.bytes_read}


def open_source(cfg: SourceConfig, *, records: list[VideoRecord] | None = None) -> ClipSource:
    if records is not None:
        return RecordClipSource(records=records, split=cfg.split)
    if cfg.shards:
        return ShardClipSource(cfg.shards, split=cfg.split)
    if cfg.raw:
        fmt = cfg.fmt if cfg.fmt != "auto" else detect_format(cfg.raw)
        if fmt == "parquet":
            return ShardClipSource(cfg.raw, split=cfg.split)
        return RecordClipSource(cfg.raw, fmt=fmt, split=cfg.split)
    raise ValueError(f"source {cfg.name!r} needs shards or raw")
