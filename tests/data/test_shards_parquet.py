"""Parquet shards: real files written and read back, layout, determinism, refusal of partial output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sam2_core.data.prep.shard_writer import assign_split, assign_splits, write_shards
from sam2_core.data.prep.synthetic import make_records
from sam2_core.data.readers.records import DataError, RleMask, VideoObject, VideoRecord
from sam2_core.data.readers.shards import (
    INDEX,
    MANIFEST,
    ShardIndex,
    ShardReader,
    iter_shard_videos,
)


@pytest.fixture(scope="module")
def records() -> list[VideoRecord]:
    return make_records(num_videos=6, num_frames=10, height=48, width=64, seed=1)


def _same(a: VideoRecord, b: VideoRecord) -> None:
    assert (a.video_id, a.height, a.width) == (b.video_id, b.height, b.width)
    assert a.frame_indices == b.frame_indices
    assert a.obj_ids == b.obj_ids
    for fi in a.annotated_indices:
        assert a.image_bytes(fi) == b.image_bytes(fi)
        for o in a.obj_ids:
            np.testing.assert_array_equal(a.mask(o, fi), b.mask(o, fi))


def test_round_trip_and_layout(tmp_path: Path, records: list[VideoRecord]) -> None:
    dst = str(tmp_path / "shards")
    m = write_shards(src=records, dst=dst, row_group_mb=0.02, shard_size_mb=0.1, val_fraction=0.3)
    back = {r.video_id: r for r in iter_shard_videos(dst)}
    assert sorted(back) == sorted(r.video_id for r in records)
    expected = assign_splits(records, val_fraction=0.3, seed=0)
    for r in records:
        _same(r, back[r.video_id])
        assert back[r.video_id].split == expected[r.video_id]
    assert m.num_frames == 60 and m.num_videos == 6
    assert sum(c["videos"] for c in m.splits.values()) == 6
    assert len(m.shards) > 1 and all(s.row_groups >= 1 for s in m.shards)
    for s in m.shards:
        pf = pq.ParquetFile(os.path.join(dst, s.file))
        t = pf.read(columns=["video_id", "frame_index"]).to_pylist()
        keys = [(r["video_id"], r["frame_index"]) for r in t]
        assert keys == sorted(keys), "rows sorted by (video_id, frame_index)"
        col = pf.metadata.row_group(0).column(pf.schema_arrow.get_field_index("image"))
        assert col.path_in_schema == "image"
        assert col.compression == "UNCOMPRESSED"
        assert "PLAIN" in col.encodings and not any("DICT" in e for e in col.encodings)
        assert col.dictionary_page_offset is None
    # Only the splits' own videos live in a shard, and the index says where each video is.
    index = ShardIndex.open(dst, verify=True)
    reader = ShardReader(dst, index.manifest)
    for e in index.videos:
        assert m.shards[int(e.shard[6:11])].split == e.split
        rows = list(range(e.first_row, e.first_row + e.num_frames))
        t = reader.read_rows(e.shard, rows, ["video_id", "frame_index"])
        assert set(t.column("video_id").to_pylist()) == {e.video_id}
        assert t.column("frame_index").to_pylist() == e.frame_indices
    ids = [v.video_id for v in index.select("train") + index.select("val")]
    assert sorted(ids) == sorted(v.video_id for v in index.videos)


def test_output_is_deterministic(tmp_path: Path, records: list[VideoRecord]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_shards(src=records, dst=str(a), row_group_mb=0.02)
    write_shards(src=list(reversed(records)), dst=str(b), row_group_mb=0.02)
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_refuses_partial_or_tampered_output(tmp_path: Path, records: list[VideoRecord]) -> None:
    dst = tmp_path / "s"
    write_shards(src=records[:3], dst=str(dst))
    ShardIndex.open(str(dst))
    shard = dst / "shard-00000.parquet"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])  # truncated
    with pytest.raises(DataError, match="size"):
        ShardIndex.open(str(dst))
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    ShardIndex.open(str(dst))  # sizes match: fast open accepts...
    with pytest.raises(DataError, match="sha256"):
        ShardIndex.open(str(dst), verify=True)  # ...full verification does not
    shard.write_bytes(data)
    man = json.loads((dst / MANIFEST).read_text())
    man["num_frames"] += 1
    (dst / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(DataError, match="count"):
        ShardIndex.open(str(dst))
    (dst / MANIFEST).unlink()
    with pytest.raises(DataError, match=r"no manifest\.json"):
        ShardIndex.open(str(dst))
    with pytest.raises(DataError, match=r"no manifest\.json"):
        list(iter_shard_videos(str(dst)))


def test_failed_write_leaves_nothing_a_reader_accepts(
    tmp_path: Path, records: list[VideoRecord]
) -> None:
    dst = tmp_path / "s"
    write_shards(src=records[:2], dst=str(dst))  # a complete older version is there

    def broken(fi: int) -> bytes:
        if fi >= 20:
            raise OSError("disk on fire")
        return records[2].image_bytes(fi)

    bad = VideoRecord(**{**records[2].__dict__, "load_image_bytes": broken})
    with pytest.raises(DataError, match=r"vid_0002.*frame 20"):
        write_shards(src=[*records[:2], bad], dst=str(dst), row_group_mb=0.01)
    assert not (dst / MANIFEST).exists()
    assert not [p for p in os.listdir(dst) if ".tmp-" in p]
    with pytest.raises(DataError, match=r"no manifest\.json"):
        ShardIndex.open(str(dst))


def test_bad_inputs_are_named(tmp_path: Path, records: list[VideoRecord]) -> None:
    r = records[0]
    wrong = VideoObject(obj_id=9, masks={0: RleMask({"size": [10, 10], "counts": "0Z1"})})
    bad_size = VideoRecord(**{**r.__dict__, "objects": {**r.objects, 9: wrong}})
    with pytest.raises(DataError, match=r"object 9 frame 0 has RLE size \[10, 10\]"):
        write_shards(src=[bad_size], dst=str(tmp_path / "a"))
    with pytest.raises(DataError, match="duplicate video id"):
        write_shards(src=[r, r], dst=str(tmp_path / "b"))
    evil = VideoRecord(**{**r.__dict__, "video_id": "../x"})
    with pytest.raises(DataError, match="invalid video id"):
        write_shards(src=[evil], dst=str(tmp_path / "c"))
    with pytest.raises(DataError, match="no videos"):
        write_shards(src=[], dst=str(tmp_path / "d"))
    assert not (tmp_path / "a" / MANIFEST).exists()


def test_rewrite_replaces_old_shards(tmp_path: Path, records: list[VideoRecord]) -> None:
    dst = tmp_path / "s"
    write_shards(src=records, dst=str(dst), shard_size_mb=0.02)
    many = len([n for n in os.listdir(dst) if n.startswith("shard-")])
    write_shards(src=records[:1], dst=str(dst))
    assert sorted(os.listdir(dst)) == [INDEX, MANIFEST, "shard-00000.parquet"]
    assert many > 1
    assert [r.video_id for r in iter_shard_videos(str(dst))] == [records[0].video_id]


def test_gcs_round_trip(gcs_url: str, records: list[VideoRecord]) -> None:
    dst = f"{gcs_url}/shards"
    m = write_shards(src=records[:3], dst=dst, row_group_mb=0.02, val_fraction=0.0)
    assert m.splits == {"train": {"videos": 3, "frames": 30}}
    index = ShardIndex.open(dst, verify=True)
    assert [v.video_id for v in index.videos] == [r.video_id for r in records[:3]]
    back = list(iter_shard_videos(dst, split="train"))
    for a, b in zip(records[:3], back):
        _same(a, b)


def test_cli_shards_a_frame_folder(tmp_path: Path, records: list[VideoRecord]) -> None:
    from sam2_core.cli import main
    from sam2_core.data.prep.synthetic import write_frame_folders

    src, dst = tmp_path / "frames", tmp_path / "shards"
    write_frame_folders(records[:2], str(src))
    assert main(["shard", str(src), str(dst), "--no-progress", "--val-fraction", "0"]) == 0
    assert main(["shard", str(dst), "--verify"]) == 0
    back = list(iter_shard_videos(str(dst)))
    assert [r.video_id for r in back] == [r.video_id for r in records[:2]]
    for a, b in zip(records[:2], back):
        assert [a.image_bytes(f) for f in a.frame_indices] == [
            b.image_bytes(f) for f in b.frame_indices
        ]
    assert (
        main(["shard", str(tmp_path / "nothing-here"), str(tmp_path / "o"), "--no-progress"]) != 0
    )


def test_small_dataset_always_gets_a_validation_video(
    tmp_path: Path, records: list[VideoRecord]
) -> None:
    """A tiny val_fraction on a few videos still yields one val video, deterministically."""
    few = records[:3]
    hashed = {r.video_id: assign_split(r.video_id, val_fraction=0.01, seed=0) for r in few}
    assert set(hashed.values()) == {"train"}, "the case this rule exists for"
    splits = assign_splits(few, val_fraction=0.01, seed=0)
    assert sorted(splits.values()) == ["train", "train", "val"]
    assert assign_splits(list(reversed(few)), val_fraction=0.01, seed=0) == splits
    assert set(assign_splits(few, val_fraction=0.0).values()) == {"train"}
    assert assign_splits(few[:1], val_fraction=0.5) == {few[0].video_id: "train"}
    m = write_shards(src=few, dst=str(tmp_path / "s"), row_group_mb=0.02, val_fraction=0.01)
    assert m.splits["val"]["videos"] == 1 and m.splits["train"]["videos"] == 2
    back = {r.video_id: r.split for r in iter_shard_videos(str(tmp_path / "s"))}
    assert back == splits
