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

Mixed image + video training (``LoaderConfig.sources``): each dataset has its own batch
size and loader; the order in which batches are drawn from them is a shuffle seeded by
``(seed, epoch)`` of each loader's batch count, identical on every rank.

This module holds the per-rank loaders. Their settings are :class:`~.config.LoaderConfig`; the
parts live in :mod:`.sources` (where clips are read from), :mod:`.partition` (the epoch plan as
pure functions), :mod:`.stream` (one source's batches in one process, with read-ahead) and
:mod:`.buffers` (output tensors).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from torch.utils.data import DataLoader

from sam2_core.data.loader.buffers import BufferPool, release_batches_when_unused
from sam2_core.data.loader.collate import BatchedVideo
from sam2_core.data.loader.config import LoaderConfig, SourceConfig
from sam2_core.data.loader.partition import mix_order, rank_batches
from sam2_core.data.loader.sampler import ClipSampler
from sam2_core.data.loader.sources import ClipSource, open_source
from sam2_core.data.loader.stream import ClipStream
from sam2_core.data.readers.records import DataError, VideoRecord

log = logging.getLogger(__name__)


class _SourceLoader:
    """One source's plan for one rank: its items, sampler and per-epoch batches."""

    def __init__(
        self,
        cfg: SourceConfig,
        source: ClipSource,
        *,
        data: LoaderConfig,
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
            resolution=self.data.resolution,
            augment=self.data.augment,
            items=self.items,
            batches=self.batches(epoch, seed),
            start=start,
            seed=seed,
            epoch=epoch,
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
            return release_batches_when_unused(iter(loader))  # forks the workers


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


class TrainLoader:
    """Iterable of :class:`BatchedVideo` for one rank, resumable mid-epoch.

    ``iter(loader)`` runs the rest of the current epoch from :attr:`position` and then moves
    to the next epoch. Save :meth:`state_dict` with a checkpoint and give it back with
    :meth:`load_state_dict` (or ``start_position``) to continue exactly where it stopped.
    ``records`` maps a source name to in-memory records (tests; instead of a URL).
    """

    def __init__(
        self,
        cfg: LoaderConfig,
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


# The training loader of one rank (see the module docstring for how work is split): the
# constructor itself, under the name callers and the README use.
build_train_loader = TrainLoader
