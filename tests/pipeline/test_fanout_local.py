"""The data fan-out through kfp.local: 3 partitions give the dataset of 1 partition.

One short pipeline run (2 training steps) with P = 3: 3 extract + 3 shard tasks in a
ParallelFor, then the commit over their Collected outputs. Its dataset version holds the same
videos, frames, masks and splits as the single pass (P = 1: extract + write_shards with the
pipeline's settings); only where rows are (shard file, row group, row) differs. The registry
records every video once, at the commit. (P = 1 through kfp.local: test_local_run.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.local_run import LocalRunConfig, LocalRunResult, describe, run_local
from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.prep.extract import extract_dataset
from sam2_core.data.prep.partitions import partition_of
from sam2_core.data.prep.shard_writer import write_shards
from sam2_core.data.readers.shards import INDEX, ShardIndex
from sam2_core.registry import Registry

pytestmark = pytest.mark.integration

P = 3
#: index columns that say where rows are; everything else must be identical for any P
LOCATION = ("shard", "row_groups", "first_row")


def _index_rows(url: str) -> list[dict[str, object]]:
    rows = pq.read_table(os.path.join(url, INDEX)).to_pylist()
    return [{k: v for k, v in r.items() if k not in LOCATION} for r in rows]


def _run(out: Path, raw: str, partitions: int) -> tuple[str, LocalRunResult]:
    result = run_local(
        LocalRunConfig(
            out=str(out),
            raw_uri=raw,
            max_steps=2,
            eval_max_videos=1,
            val_fraction=0.34,
            data_partitions=partitions,
        )
    )
    return str(result.artifacts["commit-shards/shards"]["url"]), result


def test_three_partitions_through_kfp_local_match_one(tmp_path: Path) -> None:
    raw = str(tmp_path / "raw")
    write_demo_dataset(dst=raw, num_videos=6, num_frames=16)
    s3, r3 = _run(tmp_path / "p3", raw, P)
    s1 = str(tmp_path / "s1")
    extract_dataset(src=raw, dst=str(tmp_path / "f1"), every=4, progress=False)
    write_shards(src=str(tmp_path / "f1"), dst=s1, val_fraction=0.34)

    # every partition ran its own extract and shard task, each with its own videos
    ids = sorted(v.video_id for v in ShardIndex.open(s1).videos)
    assert len(ids) == 6
    assert len({partition_of(v, num_partitions=P) for v in ids}) > 1  # a real fan-out
    for p in range(P):
        meta = r3.artifacts[f"shard-dataset[{p}]/shards"]["metadata"]
        assert (meta["partition"], meta["num_partitions"]) == (p, P)
        assert meta["videos"] == sum(partition_of(v, num_partitions=P) == p for v in ids)
    assert r3.parameters["commit-shards"]["Output"] == 6

    i1, i3 = ShardIndex.open(s1, verify=True), ShardIndex.open(s3, verify=True)
    assert _index_rows(s3) == _index_rows(s1)  # same videos, frames, objects, splits, order
    m1, m3 = i1.manifest, i3.manifest
    assert (m3.num_videos, m3.num_frames, m3.splits) == (m1.num_videos, m1.num_frames, m1.splits)
    assert m3.content_hash == m1.content_hash  # every frame's bytes, masks and split
    assert m3.params == {**m1.params, "num_partitions": P}
    assert m1.splits["val"]["videos"] >= 1

    # seen videos recorded once, by the commit, for the whole version
    (version,) = Registry(str(tmp_path / "p3" / "registry")).dataset_versions("demo").values()
    assert sorted(version["video_ids"]) == ids
    assert "train-model/model" in r3.artifacts
    assert "(partition 0 of 3)" in describe(r3)
