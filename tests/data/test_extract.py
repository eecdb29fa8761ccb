"""`sam2kf extract`: real mp4s through PyAV, worker processes, bad inputs, idempotent reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_core.cli import main as cli_main
from sam2_core.data.prep.demo import write_demo_dataset, write_demo_video
from sam2_core.data.prep.extract import extract_dataset, load_summary
from sam2_core.data.readers.formats import detect_format, iter_videos
from sam2_core.data.readers.rle import decode_rle


@pytest.fixture(scope="module")
def demo_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    write_demo_dataset(dst=str(src), num_videos=3, num_frames=18, sizes=[(64, 96), (72, 128)])
    return src


def _add_video(src: Path, vid: str, *, frames: int = 9, faststart: bool = False) -> dict:
    return write_demo_video(
        dst=str(src),
        video_id=vid,
        index=7,
        num_frames=frames,
        seed=5,
        size=(48, 64),
        faststart=faststart,
    )[2]


def test_extract_layout_masks_and_reader_roundtrip(demo_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    summary = extract_dataset(src=str(demo_src), dst=str(dst), write_masks=True, workers=2)
    assert summary.ok == ["demo_000", "demo_001", "demo_002"] and not summary.failed
    assert summary.frames == 3 * 5  # frames 0, 4, 8, 12, 16 of 18
    names = sorted(p.name for p in (dst / "JPEGImages_24fps" / "demo_001").iterdir())
    assert names == ["00000.jpg", "00004.jpg", "00008.jpg", "00012.jpg", "00016.jpg"]
    with Image.open(dst / "JPEGImages_24fps" / "demo_001" / "00008.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (128, 72))
    ann = json.loads((dst / "Annotations_json" / "demo_001_manual.json").read_text())
    assert ann == json.loads((demo_src / "demo_001_manual.json").read_text())
    png = dst / "Annotations_6fps" / "demo_001" / "001" / "00012.png"
    np.testing.assert_array_equal(np.array(Image.open(png)) > 0, decode_rle(ann["masklet"][3][1]))
    assert load_summary(str(dst))["ok"] == summary.ok
    # The output reads back as the SA-V frame layout, with the RLE masks of the raw dataset.
    assert detect_format(str(dst)) == "sav_frames"
    raw = {r.video_id: r for r in iter_videos(str(demo_src))}
    for rec in iter_videos(str(dst)):
        ref = raw[rec.video_id]
        assert rec.frame_indices == ref.frame_indices and rec.obj_ids == ref.obj_ids
        for oid in rec.obj_ids:
            np.testing.assert_array_equal(rec.mask(oid, 16), ref.mask(oid, 16))
        assert np.abs(rec.image(4).astype(int) - ref.image(4).astype(int)).max() <= 2


def test_bad_inputs_are_reported_and_do_not_stop_others(demo_src: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(demo_src, src)
    (src / "zero.mp4").write_bytes(b"")
    _add_video(src, "trunc_end")
    data = (src / "trunc_end.mp4").read_bytes()
    (src / "trunc_end.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: lost
    _add_video(src, "trunc_mid", frames=30, faststart=True)
    data = (src / "trunc_mid.mp4").read_bytes()
    (src / "trunc_mid.mp4").write_bytes(data[: len(data) * 2 // 3])  # index kept, frames lost
    ann = _add_video(src, "count")
    ann["video_frame_count"] = 10.0
    (src / "count_manual.json").write_text(json.dumps(ann))
    ann = _add_video(src, "size")
    ann["masklet"][2][0]["size"] = [64, 48]
    (src / "size_manual.json").write_text(json.dumps(ann))
    ann = _add_video(src, "badid")
    ann["video_id"] = "a/b"
    (src / "badid_manual.json").write_text(json.dumps(ann))
    _add_video(src, "noann")
    (src / "noann_manual.json").unlink()

    dst = tmp_path / "out"
    rc = cli_main(["extract", str(src), str(dst), "--workers", "2", "--no-progress"])
    assert rc == 1
    summary = load_summary(str(dst))
    assert summary["ok"] == ["demo_000", "demo_001", "demo_002", "noann"]
    failed = summary["failed"]
    assert set(failed) == {"zero", "trunc_end", "trunc_mid", "count", "size", "badid"}
    assert "zero-byte" in failed["zero"]
    assert "cannot open video" in failed["trunc_end"]
    assert "truncated" in failed["trunc_mid"] or "corrupt" in failed["trunc_mid"]
    assert "video_frame_count 10 disagrees" in failed["count"]
    assert "RLE size [64, 48]" in failed["size"]
    assert "invalid video id 'a/b'" in failed["badid"]
    assert "no annotation" in summary["warnings"]["noann"]
    for vid in failed:  # no partial output of a failed video is left behind
        assert not (dst / "JPEGImages_24fps" / vid).exists()
        assert not (dst / "_extract" / f"{vid}.json").exists()
    assert [r.video_id for r in iter_videos(str(dst))] == summary["ok"]


def test_rerun_skips_done_and_redoes_half_finished(demo_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    first = extract_dataset(src=str(demo_src), dst=str(dst), workers=0, progress=False)
    assert first.skipped == []
    done = dst / "JPEGImages_24fps" / "demo_000" / "00000.jpg"
    stamp = done.stat().st_mtime_ns
    # Simulate a crash in demo_001: marker missing, a stale extra frame and a frame missing.
    (dst / "_extract" / "demo_001.json").unlink()
    (dst / "JPEGImages_24fps" / "demo_001" / "00004.jpg").unlink()
    (dst / "JPEGImages_24fps" / "demo_001" / "00099.jpg").write_bytes(b"stale")
    # A half-finished video is invisible to readers until it is redone.
    assert [r.video_id for r in iter_videos(str(dst))] == ["demo_000", "demo_002"]
    second = extract_dataset(src=str(demo_src), dst=str(dst), workers=0, progress=False)
    assert second.skipped == ["demo_000", "demo_002"] and second.ok == first.ok
    assert second.frames == 5
    assert done.stat().st_mtime_ns == stamp
    names = sorted(p.name for p in (dst / "JPEGImages_24fps" / "demo_001").iterdir())
    assert names == ["00000.jpg", "00004.jpg", "00008.jpg", "00012.jpg", "00016.jpg"]
    # Other settings are a different extraction: redone, not skipped.
    third = extract_dataset(src=str(demo_src), dst=str(dst), every=8, workers=0, progress=False)
    assert third.skipped == [] and third.frames == 3 * 3


def test_empty_source_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["extract", str(tmp_path), str(tmp_path / "o"), "--no-progress"]) == 2
    assert "empty dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["extract", "--help"])
    out = capsys.readouterr().out
    assert "--write-masks" in out and "--every" in out and "extract_summary.json" in out


def test_extract_gs_to_gs_through_emulator(gcs_url: str, demo_src: Path) -> None:
    from sam2_core import storage

    src, dst = f"{gcs_url}/raw", f"{gcs_url}/frames"
    fs, _ = storage.get_fs(src)
    for p in sorted(demo_src.iterdir())[:2]:  # demo_000.mp4 + its JSON
        fs.put(str(p), f"{src.removeprefix('gs://')}/{p.name}")
    summary = extract_dataset(src=src, dst=dst, write_masks=True, workers=0, progress=False)
    assert summary.ok == ["demo_000"] and not summary.failed
    assert storage.exists(f"{dst}/JPEGImages_24fps/demo_000/00016.jpg")
    assert storage.exists(f"{dst}/Annotations_6fps/demo_000/000/00000.png")
    (rec,) = list(iter_videos(dst))
    assert rec.frame_indices == [0, 4, 8, 12, 16] and rec.image(8).shape == (64, 96, 3)
    again = extract_dataset(src=src, dst=dst, write_masks=True, workers=0, progress=False)
    assert again.skipped == ["demo_000"]
