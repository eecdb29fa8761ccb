"""Partitioned extraction and sharding: P partitions + commit give the same dataset as P = 1."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sam2_core.data.loader.config import LoaderConfig
from sam2_core.data.loader.train_loader import build_train_loader
from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.prep.extract import extract_dataset, load_summary
from sam2_core.data.prep.partitions import in_partition, partition_of
from sam2_core.data.prep.shard_commit import commit_shards, missing_partitions
from sam2_core.data.prep.shard_writer import assign_split, write_shard_partition, write_shards
from sam2_core.data.prep.synthetic import make_records
from sam2_core.data.readers.records import DataError, VideoRecord
from sam2_core.data.readers.sav import completed_videos
from sam2_core.data.readers.shards import INDEX, MANIFEST, ShardIndex, iter_shard_videos

P = 3
#: index columns that say where rows are; everything else must be identical for any P
LOCATION = ("shard", "row_groups", "first_row")


def test_partition_is_a_stable_hash_of_the_id() -> None:
    ids = [f"sav_{i:06d}" for i in range(3000)]
    parts = [partition_of(v, num_partitions=7) for v in ids]
    assert parts == [partition_of(v, num_partitions=7) for v in ids]  # no per-process salt
    assert {v: p for v, p in zip(reversed(ids), reversed(parts))} == dict(zip(ids, parts))
    counts = np.bincount(parts, minlength=7)
    assert counts.min() > 3000 / 7 * 0.8, counts  # roughly even
    assert partition_of("sav_000001", num_partitions=1) == 0
    # pinned: changing the hash would silently move videos between partitions of a schedule
    assert [partition_of(f"v{i}", num_partitions=5) for i in range(8)] == _PINNED
    assert in_partition("sav_000001", partition=parts[1], num_partitions=7)
    with pytest.raises(ValueError, match="num_partitions"):
        partition_of("x", num_partitions=0)


_PINNED = [4, 3, 1, 0, 4, 1, 2, 4]  # blake2b-64 of the id, modulo P


@pytest.fixture(scope="module")
def demo_p1_p3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("parts")
    raw, f1, f3 = str(root / "raw"), str(root / "f1"), str(root / "f3")
    write_demo_dataset(dst=raw, num_videos=8, num_frames=24)
    extract_dataset(src=raw, dst=f1, write_masks=True, progress=False)
    for p in range(P):
        extract_dataset(
            src=raw, dst=f3, write_masks=True, progress=False, partition=p, num_partitions=P
        )
    s1, s3 = str(root / "s1"), str(root / "s3")
    write_shards(src=f1, dst=s1, row_group_mb=0.05)
    for p in range(P):
        write_shard_partition(src=f3, dst=s3, partition=p, num_partitions=P, row_group_mb=0.05)
    commit_shards(dst=s3, num_partitions=P)
    return {"raw": raw, "f1": f1, "f3": f3, "s1": s1, "s3": s3}


def test_extract_partitions_write_only_their_videos(
    demo_p1_p3: dict[str, str], tmp_path: Path
) -> None:
    d = demo_p1_p3
    all_ids = sorted(completed_videos(d["f1"]) or set())
    assert len(all_ids) == 8
    assert sorted(completed_videos(d["f3"]) or set()) == all_ids
    for p in range(P):
        summary = load_summary(d["f3"], partition=p, num_partitions=P)
        assert summary["ok"] == [
            v for v in all_ids if in_partition(v, partition=p, num_partitions=P)
        ]
    # one partition alone writes nothing of the others
    extract_dataset(
        src=d["raw"], dst=str(tmp_path / "one"), progress=False, partition=1, num_partitions=P
    )
    own = [v for v in all_ids if partition_of(v, num_partitions=P) == 1]
    assert sorted(completed_videos(str(tmp_path / "one")) or set()) == own
    assert sorted(os.listdir(tmp_path / "one" / "JPEGImages_24fps")) == own
    # the extracted bytes do not depend on P
    for vid in all_ids:
        a = Path(d["f1"], "JPEGImages_24fps", vid)
        b = Path(d["f3"], "JPEGImages_24fps", vid)
        assert sorted(os.listdir(a)) == sorted(os.listdir(b))
        for name in os.listdir(a):
            assert (a / name).read_bytes() == (b / name).read_bytes()


def _index_rows(url: str) -> list[dict[str, object]]:
    rows = pq.read_table(os.path.join(url, INDEX)).to_pylist()
    return [{k: v for k, v in r.items() if k not in LOCATION} for r in rows]


def _same_records(a: VideoRecord, b: VideoRecord) -> None:
    assert (a.video_id, a.split, a.height, a.width) == (b.video_id, b.split, b.height, b.width)
    assert a.annotated_indices == b.annotated_indices and a.obj_ids == b.obj_ids
    for fi in a.annotated_indices:
        assert a.image_bytes(fi) == b.image_bytes(fi)
        for o in a.obj_ids:
            np.testing.assert_array_equal(a.mask(o, fi), b.mask(o, fi))


def test_three_partitions_give_the_single_pass_dataset(demo_p1_p3: dict[str, str]) -> None:
    s1, s3 = demo_p1_p3["s1"], demo_p1_p3["s3"]
    i1, i3 = ShardIndex.open(s1, verify=True), ShardIndex.open(s3, verify=True)
    assert _index_rows(s3) == _index_rows(s1)  # same videos, frames, objects, splits, order
    m1, m3 = i1.manifest, i3.manifest
    assert (m3.num_videos, m3.num_frames, m3.splits) == (m1.num_videos, m1.num_frames, m1.splits)
    assert m3.content_hash == m1.content_hash  # hashes every frame's bytes and masks + split
    assert m3.params == {**m1.params, "num_partitions": P}
    assert m1.splits["val"]["videos"] >= 1 and m1.splits["train"]["videos"] >= 1
    assert all(s.file.startswith("shard-p") for s in m3.shards)
    assert not [n for n in os.listdir(s3) if n.startswith("shard-0")]
    back1 = {r.video_id: r for r in iter_shard_videos(s1)}
    back3 = {r.video_id: r for r in iter_shard_videos(s3)}
    assert sorted(back1) == sorted(back3)
    for vid, rec in back1.items():
        _same_records(rec, back3[vid])


def test_loader_reads_the_committed_dataset(demo_p1_p3: dict[str, str]) -> None:
    def batches(url: str) -> list[tuple[object, ...]]:
        cfg = LoaderConfig(
            shards=url, resolution=64, num_frames=3, batch_size=2, num_workers=0, max_num_objects=2
        )
        out = []
        for b in build_train_loader(cfg, rank=0, world_size=1, seed=3):
            out.append(
                (
                    tuple(b.video_ids),
                    round(float(b.img_batch.double().sum()), 3),
                    int(b.masks.sum()),
                )
            )
        return out

    one, three = batches(demo_p1_p3["s1"]), batches(demo_p1_p3["s3"])
    assert one and one == three


def _records() -> list[VideoRecord]:
    return make_records(num_videos=12, num_frames=5, height=32, width=40, seed=4)


def test_rerun_of_a_failed_partition_redoes_only_it(tmp_path: Path) -> None:
    recs = _records()
    dst = str(tmp_path / "s")
    bad = next(r for r in recs if partition_of(r.video_id, num_partitions=P) == 1)

    def broken(fi: int) -> bytes:
        raise OSError("disk went away")

    good_loader = bad.load_image_bytes
    bad.load_image_bytes = broken
    for p in range(P):
        if p == 1:
            with pytest.raises(DataError, match="cannot read frame"):
                write_shard_partition(src=recs, dst=dst, partition=p, num_partitions=P)
        else:
            write_shard_partition(src=recs, dst=dst, partition=p, num_partitions=P)
    assert missing_partitions(dst=dst, num_partitions=P) == [1]
    with pytest.raises(DataError, match=r"partitions 1 of 3 are not complete"):
        commit_shards(dst=dst, num_partitions=P)
    assert not os.path.exists(os.path.join(dst, MANIFEST))
    with pytest.raises(DataError, match=r"no manifest\.json"):
        ShardIndex.open(dst)

    before = {n: os.stat(os.path.join(dst, n)).st_mtime_ns for n in os.listdir(dst)}
    bad.load_image_bytes = good_loader
    write_shard_partition(src=recs, dst=dst, partition=1, num_partitions=P)
    after = {n: os.stat(os.path.join(dst, n)).st_mtime_ns for n in os.listdir(dst)}
    others = [n for n in before if n.startswith("shard-") and "-p0001-" not in f"-{n[6:]}"]
    assert others and all(after[n] == before[n] for n in others)  # untouched
    assert missing_partitions(dst=dst, num_partitions=P) == []
    m3 = commit_shards(dst=dst, num_partitions=P)
    m1 = write_shards(src=recs, dst=str(tmp_path / "one"))
    assert m3.content_hash == m1.content_hash
    assert _index_rows(dst) == _index_rows(str(tmp_path / "one"))


def test_commit_refuses_inconsistent_partitions(tmp_path: Path) -> None:
    recs = _records()
    dst = str(tmp_path / "s")
    with pytest.raises(DataError, match="partitions 0, 1, 2 of 3"):
        commit_shards(dst=dst, num_partitions=P)
    for p in range(P):
        write_shard_partition(
            src=recs, dst=dst, partition=p, num_partitions=P, val_fraction=0.1 * (p == 2)
        )
    with pytest.raises(DataError, match="partition 2 was written with"):
        commit_shards(dst=dst, num_partitions=P)
    write_shard_partition(src=recs, dst=dst, partition=1, num_partitions=P, val_fraction=0.0)
    write_shard_partition(src=recs, dst=dst, partition=2, num_partitions=P, val_fraction=0.0)
    shard = next(n for n in sorted(os.listdir(dst)) if n.startswith("shard-p0002"))
    with open(os.path.join(dst, shard), "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="rerun partition 2"):
        commit_shards(dst=dst, num_partitions=P)
    assert not os.path.exists(os.path.join(dst, MANIFEST))
    write_shard_partition(src=recs, dst=dst, partition=2, num_partitions=P, val_fraction=0.0)
    commit_shards(dst=dst, num_partitions=P)
    ShardIndex.open(dst, verify=True)
    with pytest.raises(ValueError, match=r"partition must be within 0\.\.2"):
        write_shard_partition(src=recs, dst=dst, partition=3, num_partitions=P)


def test_at_least_one_val_rule_applies_across_partitions(tmp_path: Path) -> None:
    recs = make_records(num_videos=5, num_frames=4, height=32, width=40, seed=6)
    assert all(assign_split(r.video_id, val_fraction=0.01) == "train" for r in recs)
    one = write_shards(src=recs, dst=str(tmp_path / "one"), val_fraction=0.01)
    assert one.splits["val"]["videos"] == 1  # the rule moved the closest video to val
    dst = str(tmp_path / "s")
    for p in range(P):
        write_shard_partition(src=recs, dst=dst, partition=p, num_partitions=P, val_fraction=0.01)
    three = commit_shards(dst=dst, num_partitions=P)
    assert three.splits == one.splits and three.content_hash == one.content_hash
    assert _index_rows(dst) == _index_rows(str(tmp_path / "one"))
    assert [s.split for s in three.shards].count("mixed") == 1
    back = {r.video_id: r.split for r in iter_shard_videos(dst)}
    assert back == {r.video_id: r.split for r in iter_shard_videos(str(tmp_path / "one"))}


def test_partitions_and_commit_on_gcs(gcs_url: str, tmp_path: Path) -> None:
    recs = _records()[:6]
    dst = f"{gcs_url}/shards"
    for p in range(P):
        write_shard_partition(src=recs, dst=dst, partition=p, num_partitions=P, row_group_mb=0.02)
    assert missing_partitions(dst=dst, num_partitions=P) == []
    m3 = commit_shards(dst=dst, num_partitions=P)
    index = ShardIndex.open(dst, verify=True)
    one = write_shards(src=recs, dst=str(tmp_path / "one"), row_group_mb=0.02)
    assert m3.content_hash == one.content_hash and index.manifest.splits == one.splits
    back = {r.video_id: r for r in iter_shard_videos(dst)}
    for r in iter_shard_videos(str(tmp_path / "one")):
        _same_records(r, back[r.video_id])


def test_extract_selection_and_partition_combine(
    demo_p1_p3: dict[str, str], tmp_path: Path
) -> None:
    ids = sorted(completed_videos(demo_p1_p3["f1"]) or set())
    unknown = [f"nosuch_{i}" for i in range(6)]
    for p in range(P):
        s = extract_dataset(
            src=demo_p1_p3["raw"],
            dst=str(tmp_path / "sel"),
            progress=False,
            videos=[*ids[:3], *unknown],
            partition=p,
            num_partitions=P,
        )
        assert s.ok == [v for v in ids[:3] if partition_of(v, num_partitions=P) == p]
        # an unknown id is reported once, by the partition it would belong to
        assert sorted(s.failed) == [v for v in unknown if partition_of(v, num_partitions=P) == p]
