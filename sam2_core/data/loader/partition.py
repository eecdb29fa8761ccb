"""The epoch plan as pure functions: item order, per-rank batches, per-worker batches and the
order in which a mixed training set draws from its sources (all seeded, no state)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def mix_order(counts: Sequence[int], *, seed: int, epoch: int) -> list[int]:
    """Which source each step draws from: each source ``i`` exactly ``counts[i]`` times, in an
    order seeded by ``(seed, epoch)`` (identical on every rank)."""
    seq = [i for i, c in enumerate(counts) for _ in range(c)]
    rng = np.random.default_rng([seed, epoch, 0x4D49])
    return [seq[int(j)] for j in rng.permutation(len(seq))]
