"""The commit of a partitioned shard write: partition manifests -> one dataset version.

:func:`sam2_core.data.prep.shard_writer.write_shard_partition` leaves, per partition, its own
shard files and ``_partitions/pPPPP-of-NNNN.json``. :func:`commit_shards` checks that every
partition ``0 .. P-1`` is complete and consistent, then writes ``index.parquet`` and, last and
atomically, ``manifest.json``: from then on readers see one dataset that holds the same videos,
frames, masks, splits and index rows (in the same order) as a single-pass ``write_shards``; only
the shard file names and row positions differ.
"""

from __future__ import annotations

import logging
from typing import Any

from sam2_core import storage
from sam2_core.data.prep.partitions import check_partition, partition_label, partition_of
from sam2_core.data.prep.shard_writer import (
    assign_splits_by_id,
    split_sort_key,
    write_index_and_manifest,
)
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.shards import (
    MANIFEST,
    PARTITION_FORMAT,
    PARTITIONS_DIR,
    PartitionManifest,
    ShardInfo,
    ShardManifest,
    VideoEntry,
    partition_manifest_name,
)

log = logging.getLogger(__name__)


def _marker_url(dst: str, partition: int, num_partitions: int) -> str:
    label = partition_label(partition=partition, num_partitions=num_partitions)
    return storage.join(dst, partition_manifest_name(label))


def missing_partitions(*, dst: str, num_partitions: int) -> list[int]:
    """Partitions of ``num_partitions`` without a partition manifest in ``dst`` (not complete:
    never run, still running or failed). Empty when the commit can run."""
    check_partition(partition=0, num_partitions=num_partitions)
    dst = dst.rstrip("/")
    return [
        p for p in range(num_partitions) if not storage.exists(_marker_url(dst, p, num_partitions))
    ]


def _load(dst: str, partition: int, num_partitions: int) -> PartitionManifest:
    url = _marker_url(dst, partition, num_partitions)
    try:
        obj = storage.read_json(url)
    except ValueError as exc:  # json.JSONDecodeError: a damaged partition marker
        raise DataError(
            f"{url}: not valid JSON ({exc}); rerun this partition's shard step"
        ) from None
    m = PartitionManifest.from_json(obj, source=url)
    if m.format != PARTITION_FORMAT or (m.partition, m.num_partitions) != (
        partition,
        num_partitions,
    ):
        raise DataError(f"{url}: not the manifest of partition {partition} of {num_partitions}")
    return m


def commit_shards(*, dst: str, num_partitions: int) -> ShardManifest:
    """Merge the ``num_partitions`` partition manifests in ``dst`` into the dataset version.

    Raises DataError (one line) when a partition is missing (naming all missing ones), when
    partitions were written with different parameters, when a video is in the wrong partition
    or in two, or when a shard file is missing or has another size than its partition recorded.
    Nothing is written then. Otherwise writes ``index.parquet`` and ``manifest.json`` (last),
    removes shard files no partition names, and returns the manifest.

    The at-least-one-``val`` rule of :func:`sam2_core.data.prep.shard_writer.assign_splits`
    needs the whole dataset, so it is applied here: when it moves a video to ``val``, that
    video's index row says ``val`` while it stays in its (train) shard file, whose manifest
    entry then reads ``split: "mixed"`` (readers select by the index, never by the file).
    """
    dst = dst.rstrip("/")
    missing = missing_partitions(dst=dst, num_partitions=num_partitions)
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise DataError(
            f"{dst}: partitions {names} of {num_partitions} are not complete (no manifest in "
            f"{PARTITIONS_DIR}/); rerun them, then commit"
        )
    parts = [_load(dst, p, num_partitions) for p in range(num_partitions)]
    params = parts[0].params
    for m in parts[1:]:
        if m.params != params:
            raise DataError(
                f"{dst}: partition {m.partition} was written with {m.params}, partition 0 with "
                f"{params}; rerun the partitions with the same settings"
            )
    videos, shards, reader_splits = _merge(dst, parts)
    _apply_at_least_one_val(videos, shards, reader_splits, params)
    videos.sort(key=lambda e: split_sort_key(e.split, e.video_id))
    storage.remove(storage.join(dst, MANIFEST), recursive=False)
    manifest = write_index_and_manifest(
        dst=dst, videos=videos, shards=shards, params={**params, "num_partitions": num_partitions}
    )
    log.info("committed %d partitions of %s", num_partitions, dst)
    return manifest


def _merge(
    dst: str, parts: list[PartitionManifest]
) -> tuple[list[VideoEntry], list[ShardInfo], dict[str, str]]:
    """All index rows and shard files of the partitions, checked against the folder."""
    fs, path = storage.get_fs(dst)
    sizes = {
        str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
        for e in fs.ls(path, detail=True)
    }
    owner: dict[str, int] = {}
    videos: list[VideoEntry] = []
    shards: list[ShardInfo] = []
    reader_splits: dict[str, str] = {}
    for m in parts:
        for s in m.shards:
            if sizes.get(s.file) != s.bytes:
                raise DataError(
                    f"{dst}/{s.file}: size {sizes.get(s.file)} but partition {m.partition} "
                    f"recorded {s.bytes} (missing or rewritten); rerun partition {m.partition}"
                )
            shards.append(s)
        for e in m.videos:
            p = partition_of(e.video_id, num_partitions=m.num_partitions)
            if p != m.partition or e.video_id in owner:
                raise DataError(
                    f"{dst}: video {e.video_id!r} is in partition {m.partition}"
                    + (f" and {owner[e.video_id]}" if e.video_id in owner else f", hashes to {p}")
                )
            owner[e.video_id] = m.partition
            videos.append(e)
        reader_splits.update(m.reader_splits)
    if not videos:
        raise DataError(f"{dst}: the partitions hold no video, nothing to commit")
    return videos, shards, reader_splits


def _apply_at_least_one_val(
    videos: list[VideoEntry],
    shards: list[ShardInfo],
    reader_splits: dict[str, str],
    params: dict[str, Any],
) -> None:
    """Give the merged set the splits a single pass would have given it (see commit_shards)."""
    by_reader = {e.video_id: reader_splits.get(e.video_id, "train") for e in videos}
    want = assign_splits_by_id(
        by_reader, val_fraction=float(params["val_fraction"]), seed=int(params["seed"])
    )
    moved = {e.shard for e in videos if want[e.video_id] != e.split}
    for e in videos:
        e.split = want[e.video_id]
    for s in shards:
        if s.file in moved:
            s.split = "mixed"
