"""Shards verified on read (issue 16, item 3): page CRCs, footer checksums, manifest schema,
decode errors that name the file, row group, video and frame, and ``verify_dataset``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sam2_core.data.prep.shard_writer import write_shards
from sam2_core.data.prep.synthetic import make_records
from sam2_core.data.readers import integrity
from sam2_core.data.readers.records import DataError, VideoRecord
from sam2_core.data.readers.shard_verify import verify_dataset
from sam2_core.data.readers.shards import MANIFEST, ShardIndex, ShardReader, iter_shard_videos


@pytest.fixture(scope="module")
def records() -> list[VideoRecord]:
    return make_records(num_videos=3, num_frames=8, height=48, width=64, seed=3)


@pytest.fixture
def shards(tmp_path: Path, records: list[VideoRecord]) -> Path:
    dst = tmp_path / "shards"
    write_shards(src=records, dst=str(dst), row_group_mb=0.01, val_fraction=0.0)
    return dst


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _entry(dst: Path, video: str) -> Any:
    return next(e for e in ShardIndex.open(str(dst)).videos if e.video_id == video)


def test_written_with_page_checksums_and_footer_sha(shards: Path) -> None:
    index = verify_dataset(str(shards))
    assert index.manifest.num_videos == 3
    for s in index.manifest.shards:
        assert len(s.footer_sha256) == 64
        with open(shards / s.file, "rb") as f:
            assert integrity.footer_sha256(f, s.bytes, source=s.file) == s.footer_sha256


def test_flipped_jpeg_byte_names_shard_row_group_video_and_frame(
    shards: Path, records: list[VideoRecord]
) -> None:
    rec = records[1]
    frame = rec.annotated_indices[5]
    e = _entry(shards, rec.video_id)
    path = shards / e.shard
    image = rec.image_bytes(frame)
    at = path.read_bytes().find(image)
    assert at > 0
    _flip(path, at + len(image) // 2)
    with pytest.raises(DataError) as info:
        verify_dataset(str(shards))
    msg = str(info.value)
    assert f"{e.shard}: row group " in msg and "column image" in msg
    assert f"video {rec.video_id}, frame {frame}" in msg and "CRC" in msg
    assert "\n" not in msg
    # what train and evaluate read refuses it as well (exit 0 with other scores before)
    index = ShardIndex.open(str(shards))
    reader = ShardReader(str(shards), index.manifest)
    with pytest.raises(DataError, match=rf"video {rec.video_id}, frame {frame}"):
        reader.read_rows(e.shard, [e.first_row + 5], ["image"])
    back = {r.video_id: r for r in iter_shard_videos(str(shards))}[rec.video_id]
    assert back.image_bytes(rec.annotated_indices[0])  # the video's other frames still read
    with pytest.raises(DataError, match=rf"{e.shard}: row group \d+, column image"):
        back.image_bytes(frame)


def test_flipped_bytes_in_a_compressed_column_name_the_file(shards: Path) -> None:
    e = ShardIndex.open(str(shards)).videos[0]
    path = shards / e.shard
    md = pq.ParquetFile(path).metadata
    col = next(
        md.row_group(0).column(c)
        for c in range(md.num_columns)
        if md.row_group(0).column(c).path_in_schema.startswith("objects")
    )
    _flip(path, col.data_page_offset + col.total_compressed_size // 2)
    reader = ShardReader(str(shards), ShardIndex.open(str(shards)).manifest)
    with pytest.raises(DataError) as info:
        reader.read_rows(e.shard, [e.first_row], ["frame_index", "objects"])
    msg = str(info.value)
    assert msg.startswith(f"{shards}/{e.shard}: row group 0, column objects, video ")
    assert "cannot decode" in msg and "\n" not in msg


def test_flipped_footer_byte_refused_before_use(shards: Path) -> None:
    index = ShardIndex.open(str(shards))
    s = index.manifest.shards[0]
    path = shards / s.file
    _flip(path, s.bytes - 8 - 40)  # inside the footer metadata, size unchanged
    reader = ShardReader(str(shards), index.manifest)
    e = next(v for v in index.videos if v.shard == s.file)
    with pytest.raises(DataError, match=rf"{s.file}: Parquet footer checksum differs"):
        reader.read_rows(s.file, [e.first_row], ["frame_index"])
    with pytest.raises(DataError, match=rf"{s.file}: Parquet footer checksum differs"):
        verify_dataset(str(shards))


def test_each_file_is_checked_once_per_process(
    shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = integrity.footer_sha256

    def counting(handle: Any, size: int, *, source: str) -> str:
        calls.append(source)
        return real(handle, size, source=source)

    monkeypatch.setattr(integrity, "footer_sha256", counting)
    integrity.forget_checked()
    index = ShardIndex.open(str(shards))
    for _ in range(3):  # e.g. epochs, or readers rebuilt by the loader
        reader = ShardReader(str(shards), index.manifest)
        for e in index.videos:
            reader.read_rows(e.shard, [e.first_row], ["frame_index"])
        reader.close()
    assert sorted(calls) == sorted({f"{shards}/{s.file}" for s in index.manifest.shards})


@pytest.mark.parametrize(
    ("tamper", "field"),
    [
        (lambda m: m["shards"][0].update(rows="six"), r"shards\[0\]\.rows must be an integer"),
        (lambda m: m["shards"][0].update(bytes=-1), r"shards\[0\]\.bytes must be >= 0"),
        (lambda m: m.update(num_videos=True), r"num_videos must be an integer"),
        (lambda m: m["shards"][0].update(sha256="abc"), r"sha256 must be a sha256 hex digest"),
        (lambda m: m["shards"][0].update(file="../x.parquet"), r"relative \.parquet path"),
        (lambda m: m["splits"]["train"].update(frames="7"), r"splits\.train\.frames"),
        (lambda m: m["shards"][0].update(row_group_rows=[1, 2]), r"row_group_rows has 2 groups"),
        (lambda m: m.update(shards={}), r"field shards must be a list"),
        (lambda m: m.pop("content_hash"), r"content_hash must be a string"),
    ],
)
def test_tampered_manifest_is_refused(shards: Path, tamper: Any, field: str) -> None:
    murl = shards / MANIFEST
    manifest = json.loads(murl.read_text())
    tamper(manifest)
    murl.write_text(json.dumps(manifest))
    for check in (ShardIndex.open, verify_dataset):
        with pytest.raises(DataError, match=field) as info:
            check(str(shards))
        assert str(info.value).startswith(str(murl)) and "\n" not in str(info.value)


def test_manifest_that_is_not_an_object(shards: Path) -> None:
    (shards / MANIFEST).write_text("[1, 2]")
    with pytest.raises(DataError, match="must be a JSON object"):
        verify_dataset(str(shards))


def test_verify_finds_changed_content_without_page_checksums(
    shards: Path, records: list[VideoRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written without CRCs (older writers): the recomputed content hash still differs."""
    rec = records[0]
    frame = rec.annotated_indices[2]
    image = rec.image_bytes(frame)
    e = _entry(shards, rec.video_id)
    path = shards / e.shard
    pf = pq.ParquetFile(path)
    table = pf.read()
    images = table.column("image").to_pylist()
    row = e.first_row + 2
    images[row] = image[:-3] + bytes([image[-3] ^ 1]) + image[-2:]
    import pyarrow as pa

    table = table.set_column(
        table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())
    )
    pq.write_table(table, path, row_group_size=len(table))  # no page checksums
    manifest = json.loads((shards / MANIFEST).read_text())
    import hashlib

    for s in manifest["shards"]:
        if s["file"] == e.shard:
            data = path.read_bytes()
            s.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            with open(path, "rb") as f:
                s["footer_sha256"] = integrity.footer_sha256(f, len(data), source="x")
            s.update(row_groups=1, row_group_rows=[len(table)])
    (shards / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"video {rec.video_id}: content differs from its hash"):
        verify_dataset(str(shards))


def test_cli_shard_verify_refuses_a_tampered_manifest(
    shards: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sam2_core.cli import main as cli_main

    assert cli_main(["shard", "--verify", str(shards)]) == 0
    murl = shards / MANIFEST
    manifest = json.loads(murl.read_text())
    manifest["shards"][0]["rows"] = "six"
    murl.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli_main(["shard", "--verify", str(shards)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "shards[0].rows must be an integer, got 'six'" in err


def test_verify_refuses_an_invalid_mask_rle(tmp_path: Path, records: list[VideoRecord]) -> None:
    from sam2_core.data.readers.records import RleMask, VideoObject

    r = records[0]
    frame = r.annotated_indices[1]
    bad = VideoObject(obj_id=7, masks={frame: RleMask({"size": [48, 64], "counts": "0Z1"})})
    rec = VideoRecord(**{**r.__dict__, "objects": {**r.objects, 7: bad}})
    dst = tmp_path / "s"
    write_shards(src=[rec], dst=str(dst), val_fraction=0.0)
    with pytest.raises(
        DataError, match=rf"video {r.video_id}, frame {frame}: object 7 mask RLE is invalid"
    ):
        verify_dataset(str(dst))
