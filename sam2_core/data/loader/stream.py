"""Per-process streaming of one source's batches: clip choice, read-ahead and decode threads,
transforms into reused output buffers, and the thread settings of DataLoader workers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sam2_core.data.loader.buffers import BufferPool
from sam2_core.data.loader.collate import BatchedVideo, VideoSample, collate_videos
from sam2_core.data.loader.config import AugmentConfig, SourceConfig
from sam2_core.data.loader.partition import worker_batches
from sam2_core.data.loader.sampler import ClipChoice, ClipSampler
from sam2_core.data.loader.sources import ClipSource
from sam2_core.data.loader.transforms import (
    DecodedImage,
    decode_images,
    encoded_size,
    transform_clip,
)
from sam2_core.data.readers.records import DataError

log = logging.getLogger(__name__)

#: How many other videos a sample may fall back to before the loader gives up.
MAX_SUBSTITUTIONS = 100

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
        decode = self._decode
        if self._decoder is None or decode is None:
            return fut
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
        resolution: int,
        augment: AugmentConfig,
        items: list[int],
        batches: list[list[tuple[int, int]]],
        start: int,
        seed: int,
        epoch: int,
        buffers: BufferPool | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.cfg = cfg
        self.resolution = resolution
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
        meta = self.source.videos[video]
        decoded = decode_images(
            cast(list[bytes], images),  # a source's read returns encoded frames
            orig_hw=(meta.height, meta.width),
            resolution=self.resolution,
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
        res = self.resolution
        t = self.cfg.num_frames
        buf = self.buffers.get((t, len(batch), 3, res, res), torch.float32)
        samples = [
            self.make_sample(pos, item, out=buf[:, b]) for b, (pos, item) in enumerate(batch)
        ]
        masks = None
        if len(samples) > 1:
            num_o = sum(s.masks.shape[1] for s in samples)
            masks = self.buffers.get((t, num_o, res, res), torch.bool)
        out = collate_videos(samples, dict_key=self.cfg.name, img_batch=buf, masks=masks)
        out.buffer_tokens = self.buffers.take_tokens()  # None unless in a DataLoader worker
        return out

    def make_sample(self, pos: int, item: int, *, out: torch.Tensor | None = None) -> VideoSample:
        """The clip at epoch position ``pos`` (falls back to later items if it has none)."""
        rng = np.random.default_rng([self.seed, self.epoch, pos])
        n = len(self.items)
        res = self.resolution
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
                    resolution=res,
                    augment=self.augment,
                    rng=rng,
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


def _single_threaded() -> None:
    """One thread per worker process: workers are the parallelism (no oversubscription)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
