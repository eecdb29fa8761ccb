"""Deterministic data partitions: which of P partitions a video belongs to.

A video's partition is a stable hash of its id modulo P (blake2b, never Python's salted
``hash()``), so it depends only on the id and P: not on listing order, on the other videos, or
on earlier runs with another P. A rerun with the same P redoes exactly the same videos in each
partition, and a video added later lands in a predictable partition.
"""

from __future__ import annotations

import hashlib


def check_partition(*, partition: int, num_partitions: int) -> None:
    """ValueError (one line naming the values) unless ``0 <= partition < num_partitions``."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if not 0 <= partition < num_partitions:
        raise ValueError(
            f"partition must be within 0..{num_partitions - 1} (num_partitions={num_partitions})"
            f", got {partition}"
        )


def partition_of(video_id: str, *, num_partitions: int) -> int:
    """The partition (``0 .. num_partitions - 1``) of ``video_id``."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_partitions


def in_partition(video_id: str, *, partition: int, num_partitions: int) -> bool:
    """Whether ``video_id`` belongs to ``partition`` of ``num_partitions``."""
    return partition_of(video_id, num_partitions=num_partitions) == partition


def partition_label(*, partition: int, num_partitions: int) -> str:
    """``p0002-of-0003``: names partition outputs so that no two partitions (or two runs with
    different P in the same folder) ever share a file name."""
    return f"p{partition:04d}-of-{num_partitions:04d}"
