"""Training data loading: clips from Parquet shards (or raw datasets) on any fsspec URL.

How work is split (deterministic, no overlap, resumable):

1. The epoch plan. Every usable video (enough annotated frames, see :mod:`sampler`) appears
   ``multiplier`` times; the list is shuffled with a generator seeded by ``(seed, epoch)``,
   padded by wrapping around to a multiple of ``world_size`` (like ``DistributedSampler``), and
   rank ``r`` takes items ``r, r + world_size, ...``, cut into batches (the last partial batch
   is dropped), so every rank runs the same number of steps.
2. Resuming at ``start_position`` (batches already consumed on this rank) drops those batches;
   the remaining ones go round-robin to DataLoader workers (remaining batch ``j`` to worker
   ``j % num_workers``), which is the order in which ``DataLoader`` returns them.
3. Every random choice of a clip (window, reversal, objects, augmentation) comes from a
   generator seeded by ``(seed, epoch, item position in the epoch plan)``: the same clip
   whatever the number of ranks, workers or restarts.

Reading: shards are read by row group (only the groups holding the clip's frames, only the
needed columns, with ranged reads on object stores); each worker process opens its own
filesystem and files lazily, so no gcsfs object crosses a fork.

Mixed image + video training (:class:`DataConfig.sources`): each dataset has its own batch
size and loader; the order in which batches are drawn from them is a shuffle seeded by
``(seed, epoch)`` of each loader's batch count, identical on every rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sam2_core.data.collate import BatchedVideo, VideoSample, collate_videos
from sam2_core.data.records import DataError, VideoRecord
from sam2_core.data.sampler import ClipChoice, ClipSampler
from sam2_core.data.transforms import (
    DecodedImage,
    TransformConfig,
    decode_images,
    encoded_size,
    transform_clip,
)

log = logging.getLogger(__name__)

#: How many other videos a sample may fall back to before the loader gives up.
MAX_SUBSTITUTIONS = 100


@dataclass
class SourceConfig:
    """One dataset of a mixed training set (an image dataset is one with ``num_frames=1``)."""

    name: str = "all"
    shards: str | None = None
    raw: str | None = None
    fmt: str = "auto"
    split: str | None = "train"
    batch_size: int = 1
    num_frames: int = 8
    max_num_objects: int = 3
    reverse_time_prob: float = 0.0
    multiplier: int = 1


@dataclass
class DataConfig:
    """Training data settings (defaults: Meta's MOSE fine-tuning recipe).

    Set ``shards`` (a ``sam2kf shard`` output) or ``raw`` (any dataset ``iter_videos`` reads,
    e.g. a JPEG frame folder); or list several :class:`SourceConfig` in ``sources`` for mixed
    training (then the top-level ``shards``/``raw``/sampling fields are ignored).
    """

    shards: str | None = None
    raw: str | None = None
    fmt: str = "auto"
    split: str | None = "train"
    resolution: int = 1024
    num_frames: int = 8
    max_num_objects: int = 3
    batch_size: int = 1
    num_workers: int = 2
    reverse_time_prob: float = 0.0
    multiplier: int = 1
    pin_memory: bool = False
    prefetch_factor: int = 2
    augment: bool = True
    hflip_prob: float = 0.5
    degrees: float = 25.0
    shear: float = 20.0
    brightness: float = 0.1
    contrast: float = 0.03
    saturation: float = 0.03
    grayscale_prob: float = 0.05
    frame_brightness: float = 0.1
    frame_contrast: float = 0.05
    frame_saturation: float = 0.05
    sources: list[SourceConfig] = field(default_factory=list)

    def transform_config(self) -> TransformConfig:
        return TransformConfig(
            resolution=self.resolution,
            hflip_prob=self.hflip_prob,
            degrees=self.degrees,
            shear=self.shear,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            grayscale_prob=self.grayscale_prob,
            frame_brightness=self.frame_brightness,
            frame_contrast=self.frame_contrast,
            frame_saturation=self.frame_saturation,
        )

    def source_configs(self) -> list[SourceConfig]:
        if self.sources:
            return [s if isinstance(s, SourceConfig) else SourceConfig(**s) for s in self.sources]
        if not self.shards and not self.raw:
            raise ValueError("DataConfig needs data.shards, data.raw or data.sources")
        return [
            SourceConfig(
                name="all",
                shards=self.shards,
                raw=self.raw,
                fmt=self.fmt,
                split=self.split,
                batch_size=self.batch_size,
                num_frames=self.num_frames,
                max_num_objects=self.max_num_objects,
                reverse_time_prob=self.reverse_time_prob,
                multiplier=self.multiplier,
            )
        ]


# ----------------------------------------------------------------------------- sources


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


class ShardSource(ClipSource):
    """Clips from a ``sam2kf shard`` directory (read ahead by :class:`ClipStream`: one ranged
    read per clip, so hiding its latency behind the transform pays most on object stores)."""

    prefetch = True

    def __init__(self, url: str, *, split: str | None = "train") -> None:
        from sam2_core.data.shards import ShardIndex

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
        from sam2_core.data.shards import ShardReader

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


class RecordSource(ClipSource):
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
            raise ValueError("RecordSource needs exactly one of url or records")
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
        from sam2_core.data.formats import iter_videos

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
        return RecordSource(records=records, split=cfg.split)
    if cfg.shards:
        return ShardSource(cfg.shards, split=cfg.split)
    if cfg.raw:
        from sam2_core.data.formats import detect_format

        fmt = cfg.fmt if cfg.fmt != "auto" else detect_format(cfg.raw)
        if fmt == "parquet":
            return ShardSource(cfg.raw, split=cfg.split)
        return RecordSource(cfg.raw, fmt=fmt, split=cfg.split)
    raise ValueError(f"source {cfg.name!r} needs shards or raw")


# ----------------------------------------------------------------------------- epoch plan


def epoch_order(num_items: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's item order: a permutation seeded by ``(seed, epoch)``."""
    if not shuffle:
        return np.arange(num_items)
    return np.random.default_rng([seed, epoch, 0x5A4D]).permutation(num_items)


def rank_batches(
    num_items: int,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[list[tuple[int, int]]]:
    """Batches of this rank for one epoch: lists of ``(position in the epoch order, item)``.

    Positions are global (they seed each clip's randomness); items index the dataset.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    if num_items == 0:
        return []
    order = epoch_order(num_items, seed=seed, epoch=epoch, shuffle=shuffle)
    total = -(-num_items // world_size) * world_size
    padded = [(p, int(order[p % num_items])) for p in range(total)]
    mine = padded[rank::world_size]
    n = len(mine) // batch_size
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(n)]


def worker_batches(
    batches: list[list[tuple[int, int]]], *, start: int, worker: int, num_workers: int
) -> list[tuple[int, list[tuple[int, int]]]]:
    """``(batch number, batch)`` a DataLoader worker produces after skipping ``start`` batches."""
    remaining = list(enumerate(batches))[start:]
    return remaining[worker :: max(1, num_workers)]


# ----------------------------------------------------------------------------- output buffers


class BufferPool:
    """Output tensors for batches, allocated where they cost least.

    A 1024 px clip of 8 frames is 100 MB of float32: touching freshly mapped memory of that size
    costs about as much as warping two frames. So:

    * in the process that consumes the batches (``num_workers=0``), a buffer is reused once
      nothing references its storage any more (the trainer dropped the batch and every view of
      it); at most ``per_shape`` buffers per shape are kept, which covers ``for batch in
      loader`` holding the previous batch while the next one is built.
    * in a DataLoader worker, a buffer is allocated in shared memory, which is where the batch
      has to go anyway: sending it to the trainer then costs no copy. Never reused there (the
      trainer process may still read it).
    """

    def __init__(self, per_shape: int = 2, max_shapes: int = 8) -> None:
        self.per_shape = per_shape
        self.max_shapes = max_shapes
        self._bufs: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}
        self.reused = 0
        self.allocated = 0

    def get(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` and ``dtype``."""
        self.allocated += 1
        if get_worker_info() is not None:
            return _shared_empty(shape, dtype)
        key = (tuple(shape), dtype)
        pool = self._bufs.pop(key, [])
        self._bufs[key] = pool  # most recently used last
        for buf in pool:
            if _unreferenced(buf):
                self.reused += 1
                self.allocated -= 1
                return buf.view(shape)  # a new tensor object: its life marks the buffer busy
        buf = torch.empty(shape, dtype=dtype)
        if len(pool) < self.per_shape:
            pool.append(buf)
        while len(self._bufs) > self.max_shapes:
            self._bufs.pop(next(iter(self._bufs)))
        return buf.view(shape)


def _unreferenced(buf: torch.Tensor) -> bool:
    """Whether only the pool's own tensor (plus the temporary storage handle) holds ``buf``'s
    storage. Without the private counter, buffers are simply never reused."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return False
    return int(count(buf.untyped_storage()._cdata)) <= 2


def _shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (what ``default_collate`` does in workers)."""
    numel = 1
    for d in shape:
        numel *= int(d)
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    out = torch.empty(0, dtype=dtype).set_(storage)
    return out.view(-1)[:numel].view(shape)


# ----------------------------------------------------------------------------- read-ahead

_ReadKey = tuple[int, tuple[int, ...], tuple[int, ...]]
_ReadResult = tuple[list[bytes] | list[DecodedImage], list[np.ndarray], list[int]]


class _ReadAhead:
    """Clip reads on ONE background thread of the process that iterates (made after a fork,
    never shared across one), so an object store's latency overlaps the current clip's
    transform. Every read goes through that thread, so the source's reader and filesystem are
    only ever used by one thread. With ``decode``, a second thread turns each read into decoded
    frames, so the next clip's fetch overlaps this clip's decode. At most ``limit`` reads are
    pending; results are the same as a direct read, so the output does not depend on timing."""

    def __init__(
        self,
        read: Callable[[int, Sequence[int], Sequence[int]], _ReadResult],
        decode: Callable[[int, _ReadResult], _ReadResult] | None = None,
    ) -> None:
        self._read = read
        self._decode = decode
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clip-read-ahead")
        self._decoder = (
            ThreadPoolExecutor(1, thread_name_prefix="clip-decode") if decode is not None else None
        )
        self._pending: dict[_ReadKey, Future[_ReadResult]] = {}

    def _submit(
        self, video: int, positions: Sequence[int], obj_ids: Sequence[int]
    ) -> Future[_ReadResult]:
        fut = self._pool.submit(self._read, video, positions, obj_ids)
        if self._decoder is None or self._decode is None:
            return fut
        decode = self._decode
        # FIFO on one thread: waits for this read while the reader already fetches the next.
        return self._decoder.submit(lambda: decode(video, fut.result()))

    def schedule(self, video: int, positions: Sequence[int], obj_ids: Sequence[int]) -> None:
        key = (video, tuple(positions), tuple(obj_ids))
        if key not in self._pending:
            self._pending[key] = self._submit(video, positions, obj_ids)

    def read(self, video: int, positions: Sequence[int], obj_ids: Sequence[int]) -> _ReadResult:
        key = (video, tuple(positions), tuple(obj_ids))
        fut = self._pending.pop(key, None)
        if fut is None:  # not predicted (a substitute video): read now, on the same threads
            fut = self._submit(video, positions, obj_ids)
        return fut.result()  # re-raises the read's DataError here, where it is handled

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()


# ----------------------------------------------------------------------------- the stream


class ClipStream(IterableDataset):
    """The batches of one source for one rank and epoch, from ``start`` on (an IterableDataset
    whose items are whole :class:`BatchedVideo`; use ``DataLoader(batch_size=None)``)."""

    def __init__(
        self,
        source: ClipSource,
        *,
        cfg: SourceConfig,
        transform: TransformConfig,
        items: list[int],
        batches: list[list[tuple[int, int]]],
        start: int,
        seed: int,
        epoch: int,
        augment: bool = True,
        buffers: BufferPool | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.cfg = cfg
        self.transform = transform
        self.items = items
        self.batches = batches
        self.start = start
        self.seed = seed
        self.epoch = epoch
        self.augment = augment
        self.sampler = ClipSampler(cfg.num_frames, cfg.max_num_objects, cfg.reverse_time_prob)
        self.counters = {"substituted": 0}
        self.bytes_used = 0
        # Shared across the epochs of one loader (when given): re-faulting 100 MB of fresh
        # output memory at every epoch start would cost as much as transforming a clip.
        self.buffers = buffers if buffers is not None else BufferPool()
        self._ahead: _ReadAhead | None = None  # set while iterating (in the iterating process)

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start)

    def __iter__(self) -> Iterator[BatchedVideo]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            _single_threaded()
        mine = [
            b
            for _, b in worker_batches(
                self.batches, start=self.start, worker=worker, num_workers=num_workers
            )
        ]
        if not self.source.prefetch:
            for batch in mine:
                yield self.make_batch(batch)
            return
        self._ahead = _ReadAhead(self.source.read, decode=self._decode_clip)
        try:
            for i, batch in enumerate(mine):
                # Read this batch (if not yet asked) and the next one while this one is built:
                # at most two batches of reads in flight per worker.
                for upcoming in mine[i : i + 2]:
                    self._predict_reads(upcoming)
                yield self.make_batch(batch)
        finally:
            self._ahead.close()
            self._ahead = None

    def _decode_clip(self, video: int, read: _ReadResult) -> _ReadResult:
        """Decode-thread work: the clip's JPEGs decoded ahead, so the iterating thread only
        augments (decoding is about a third of a frame's CPU time)."""
        images, masks, frames = read
        raw = [b for b in images if isinstance(b, bytes)]
        if len(raw) != len(images):
            return read  # already decoded
        meta = self.source.videos[video]
        decoded = decode_images(
            raw,
            orig_hw=(meta.height, meta.width),
            resolution=self.transform.resolution,
            source=f"{self.source.url} video {meta.video_id}",
        )
        return decoded, masks, frames

    def _predict_reads(self, batch: list[tuple[int, int]]) -> None:
        """Schedule the first-choice read of each clip of ``batch``: the choice is a pure
        function of ``(seed, epoch, position)``, drawn first from the clip's generator, so the
        same draw here is exactly what :meth:`make_sample` will ask for."""
        assert self._ahead is not None
        for pos, item in batch:
            rng = np.random.default_rng([self.seed, self.epoch, pos])
            video = self.items[item]
            choice = self._choose(video, rng)
            if choice is not None:
                self._ahead.schedule(video, choice.positions, choice.obj_ids)

    def make_batch(self, batch: list[tuple[int, int]]) -> BatchedVideo:
        res = self.transform.resolution
        t = self.cfg.num_frames
        buf = self.buffers.get((t, len(batch), 3, res, res), torch.float32)
        samples = [
            self.make_sample(pos, item, out=buf[:, b]) for b, (pos, item) in enumerate(batch)
        ]
        masks = None
        if len(samples) > 1:
            num_o = sum(s.masks.shape[1] for s in samples)
            masks = self.buffers.get((t, num_o, res, res), torch.bool)
        return collate_videos(samples, dict_key=self.cfg.name, img_batch=buf, masks=masks)

    def make_sample(self, pos: int, item: int, *, out: torch.Tensor | None = None) -> VideoSample:
        """The clip at epoch position ``pos`` (falls back to later items if it has none)."""
        rng = np.random.default_rng([self.seed, self.epoch, pos])
        n = len(self.items)
        res = self.transform.resolution
        for attempt in range(min(n, MAX_SUBSTITUTIONS)):
            video = self.items[(item + attempt) % n] if attempt else self.items[item]
            meta = self.source.videos[video]
            choice = self._choose(video, rng)
            if choice is None:
                self.counters["substituted"] += 1
                log.warning(
                    "%s: no object visible in any window; using another video", meta.video_id
                )
                continue
            try:
                read = self._ahead.read if self._ahead is not None else self.source.read
                images, masks, frames = read(video, choice.positions, choice.obj_ids)
                out_masks = self.buffers.get(
                    (len(images), len(choice.obj_ids), res, res), torch.bool
                )
                clip = transform_clip(
                    images,
                    masks,
                    cfg=self.transform,
                    rng=rng,
                    train=self.augment,
                    out_images=out,
                    out_masks=out_masks,
                )
            except DataError as exc:
                self.counters["substituted"] += 1
                log.warning("%s: skipped (%s); using another video", meta.video_id, exc)
                continue
            self.bytes_used += sum(encoded_size(b) for b in images)
            return VideoSample(
                images=clip.images,
                masks=clip.masks,
                obj_ids=list(choice.obj_ids),
                frame_indices=frames,
                video_id=meta.video_id,
                orig_size=(meta.height, meta.width),
            )
        raise DataError(f"{self.source.url}: no usable clip after {MAX_SUBSTITUTIONS} videos")

    def _choose(self, video: int, rng: np.random.Generator) -> ClipChoice | None:
        meta = self.source.videos[video]
        return self.sampler.sample(
            num_annotated=meta.num_frames,
            visible=lambda p: self.source.visible(video, p),
            rng=rng,
        )


@contextlib.contextmanager
def _cv2_pool_stopped() -> Iterator[None]:
    """Fork DataLoader workers while OpenCV's thread pool is stopped.

    A child forked while the parent's OpenCV pool threads exist inherits the pool's state but
    not its threads, and ``cv2.setNumThreads`` then blocks forever in the child. Stopping the
    pool in the parent for the moment of the fork (and restoring it after) avoids that.
    """
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _single_threaded() -> None:
    """One thread per worker process: workers are the parallelism (no oversubscription)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- loaders


class _SourceLoader:
    """One source's plan for one rank: its items, sampler and per-epoch batches."""

    def __init__(
        self,
        cfg: SourceConfig,
        source: ClipSource,
        *,
        data: DataConfig,
        rank: int,
        world_size: int,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.data = data
        self.rank = rank
        self.world_size = world_size
        sampler = ClipSampler(cfg.num_frames, cfg.max_num_objects, cfg.reverse_time_prob)
        usable = [i for i, v in enumerate(source.videos) if sampler.usable(v.num_frames)]
        short = len(source.videos) - len(usable)
        self.skipped = {"short": short}
        if short:
            log.warning(
                "%s: %d of %d videos have fewer than %d annotated frames and are skipped",
                source.url,
                short,
                len(source.videos),
                cfg.num_frames,
            )
        if not usable:
            raise DataError(
                f"{source.url}: no video has {cfg.num_frames} annotated frames (num_frames)"
            )
        self.items = [i for i in usable for _ in range(max(1, cfg.multiplier))]
        self.last_stream: ClipStream | None = None
        self.buffers = BufferPool()  # used only with num_workers=0 (workers use shared memory)

    def batches(self, epoch: int, seed: int) -> list[list[tuple[int, int]]]:
        return rank_batches(
            len(self.items),
            batch_size=self.cfg.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            seed=seed,
            epoch=epoch,
        )

    def stream(self, epoch: int, start: int, seed: int) -> ClipStream:
        return ClipStream(
            self.source,
            cfg=self.cfg,
            transform=self.data.transform_config(),
            items=self.items,
            batches=self.batches(epoch, seed),
            start=start,
            seed=seed,
            epoch=epoch,
            augment=self.data.augment,
            buffers=self.buffers,
        )

    def iterate(self, epoch: int, start: int, seed: int) -> Iterator[BatchedVideo]:
        stream = self.stream(epoch, start, seed)
        self.last_stream = stream  # read counters here when num_workers == 0 (benchmarks)
        if self.data.num_workers <= 0:
            return iter(stream)
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=self.data.num_workers,
            pin_memory=self.data.pin_memory,
            prefetch_factor=self.data.prefetch_factor,
            persistent_workers=False,
        )
        with _cv2_pool_stopped():
            return iter(loader)  # forks the workers


def mix_order(counts: Sequence[int], *, seed: int, epoch: int) -> list[int]:
    """Which source each step draws from: each source ``i`` exactly ``counts[i]`` times, in an
    order seeded by ``(seed, epoch)`` (identical on every rank)."""
    seq = [i for i, c in enumerate(counts) for _ in range(c)]
    rng = np.random.default_rng([seed, epoch, 0x4D49])
    return [seq[int(j)] for j in rng.permutation(len(seq))]


class TrainLoader:
    """Iterable of :class:`BatchedVideo` for one rank, resumable mid-epoch.

    ``iter(loader)`` runs the rest of the current epoch from :attr:`position` and then moves
    to the next epoch. Save :meth:`state_dict` with a checkpoint and give it back with
    :meth:`load_state_dict` (or ``start_position``) to continue exactly where it stopped.
    """

    def __init__(
        self,
        cfg: DataConfig,
        *,
        rank: int,
        world_size: int,
        seed: int,
        epoch: int = 0,
        start_position: int = 0,
        records: dict[str, list[VideoRecord]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = epoch
        self.position = start_position
        self.loaders = [
            _SourceLoader(
                sc,
                open_source(sc, records=(records or {}).get(sc.name)),
                data=cfg,
                rank=rank,
                world_size=world_size,
            )
            for sc in cfg.source_configs()
        ]
        self.last_streams: list[ClipStream] = []

    def _order(self) -> list[int]:
        counts = [len(ld.batches(self.epoch, self.seed)) for ld in self.loaders]
        if len(self.loaders) == 1:
            return [0] * counts[0]
        return mix_order(counts, seed=self.seed, epoch=self.epoch)

    def __len__(self) -> int:
        """Batches in the current epoch on this rank (consumed ones included)."""
        return len(self._order())

    def __iter__(self) -> Iterator[BatchedVideo]:
        order = self._order()
        if self.position > len(order):
            raise ValueError(f"position {self.position} beyond the epoch's {len(order)} batches")
        done = order[: self.position]
        starts = [done.count(i) for i in range(len(self.loaders))]
        its: list[Iterator[BatchedVideo] | None] = [None] * len(self.loaders)
        for k in order[self.position :]:
            it = its[k]
            if it is None:
                it = its[k] = self.loaders[k].iterate(self.epoch, starts[k], self.seed)
            batch = next(it)
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("world_size", self.world_size)) != self.world_size:
            log.warning(
                "resuming data position saved with world size %s on %s ranks: the rest of the "
                "epoch is re-planned for the new world size",
                state.get("world_size"),
                self.world_size,
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state.get("seed", self.seed))


def build_train_loader(
    cfg: DataConfig,
    *,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int = 0,
    start_position: int = 0,
    records: dict[str, list[VideoRecord]] | None = None,
) -> TrainLoader:
    """The training loader of this rank (see the module docstring for how work is split).

    ``records`` maps a source name to in-memory records (tests; instead of a URL).
    """
    return TrainLoader(
        cfg,
        rank=rank,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
        start_position=start_position,
        records=records,
    )
