"""The workflow's partitioned data steps (what each fan-out task and the commit step run).

Partitions written into their own folders (KFP artifacts without ``storage_root``) are gathered
by the commit; the committed version equals the single pass; the registry records the videos
only at the commit; "0 new videos" is judged over all partitions; a missing partition is named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.shards import INDEX, MANIFEST, ShardIndex
from sam2_core.registry import Registry
from sam2_core.workflow import (
    Location,
    commit_dataset,
    extract_videos,
    partition_numbers,
    shard_partition,
    shard_videos,
)

P = 3
LOCATION = ("shard", "row_groups", "first_row")


def _rows(url: str) -> list[dict[str, object]]:
    rows = pq.read_table(os.path.join(url, INDEX)).to_pylist()
    return [{k: v for k, v in r.items() if k not in LOCATION} for r in rows]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> str:
    dst = str(tmp_path_factory.mktemp("raw"))
    write_demo_dataset(dst=dst, num_videos=5, num_frames=12, sizes=((64, 96),) * 5)
    return dst


def _partitions(
    raw: str, root: Path, registry: str, run_id: str = "r1"
) -> tuple[list[Location], list[int]]:
    """Each partition extracts and shards into folders of its own, like one fan-out task."""
    parts, counts = [], []
    for p in partition_numbers(num_partitions=P):
        frames = Location(str(root / f"frames-{p}"))
        counts.append(
            extract_videos(
                raw_uri=raw,
                frames=frames,
                dataset_name="demo",
                dataset_version="auto",
                registry_uri=registry,
                run_id=run_id,
                partition=p,
                num_partitions=P,
            )
        )
        part = Location(str(root / f"shards-{p}"))
        shard_partition(frames=frames, shards=part, partition=p, num_partitions=P)
        parts.append(part)
    return parts, counts


def test_partitions_in_own_folders_commit_to_the_single_pass(raw: str, tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    parts, counts = _partitions(raw, tmp_path, registry)
    assert sum(counts) == 5 and [p.metadata["videos"] for p in parts] == counts
    assert Registry(registry).seen_videos("demo") == set()  # nothing recorded before the commit
    out = Location(str(tmp_path / "dataset"))
    assert (
        commit_dataset(partitions=parts, shards=out, num_partitions=P, registry_uri=registry) == 5
    )
    assert out.metadata["dataset_version"] == "run-r1"
    assert len(Registry(registry).seen_videos("demo")) == 5

    single = Location(str(tmp_path / "single"))
    frames = Location(str(tmp_path / "single-frames"))
    extract_videos(raw_uri=raw, frames=frames, dataset_name="x", dataset_version="v")
    shard_videos(frames=frames, shards=single)
    assert _rows(out.uri) == _rows(single.uri)
    m3 = ShardIndex.open(out.uri, verify=True).manifest
    m1 = ShardIndex.open(single.uri).manifest
    assert m3.content_hash == m1.content_hash and m3.splits == m1.splits

    # a later run of the same videos: nothing new in any partition, nothing committed
    run2 = tmp_path / "run2"
    parts2, counts2 = _partitions(raw, run2, registry, run_id="r2")
    assert counts2 == [0] * P
    empty = Location(str(run2 / "dataset"))
    assert commit_dataset(partitions=parts2, shards=empty, num_partitions=P) == 0
    assert not (run2 / "dataset" / MANIFEST).exists()


def test_commit_refuses_a_missing_partition(raw: str, tmp_path: Path) -> None:
    parts, _ = _partitions(raw, tmp_path, "")
    out = Location(str(tmp_path / "dataset"))
    with pytest.raises(ValueError, match="2 shard partitions for num_partitions=3"):
        commit_dataset(partitions=parts[:2], shards=out, num_partitions=P)
    # a partition whose manifest never got written (the task failed half-way)
    marker = Path(parts[1].uri) / "_partitions" / "p0001-of-0003.json"
    marker.unlink()
    with pytest.raises(DataError, match="partitions 1 of 3 are not complete"):
        commit_dataset(partitions=parts, shards=out, num_partitions=P)
    assert not (Path(out.uri) / MANIFEST).exists()


def test_partition_numbers_checks_its_input() -> None:
    assert partition_numbers(num_partitions=3) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        partition_numbers(num_partitions=0)
