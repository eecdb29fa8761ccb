"""SA-V readers: raw mp4 + JSON (incl. the real SA-V example JSON) and the frame layout."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from sam2_core.data.prep.demo import (
    encode_mp4,
    render_demo_video,
    sav_annotation,
    write_demo_dataset,
    write_demo_video,
)
from sam2_core.data.readers.formats import detect_format, iter_videos
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.rle import decode_rle
from sam2_core.data.readers.sav import load_annotation, read_raw_video


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("raw")
    write_demo_dataset(dst=str(dst), num_videos=3, num_frames=21)
    return dst


def _one_video(tmp: Path, vid: str = "v1", *, frames: int = 9, size: tuple[int, int] = (64, 96)):
    return write_demo_video(
        dst=str(tmp), video_id=vid, index=0, num_frames=frames, seed=1, size=size
    )


def test_raw_records_frames_masks_and_pickle(raw: Path) -> None:
    assert detect_format(str(raw)) == "sav_raw"
    recs = list(iter_videos(str(raw)))
    assert [r.video_id for r in recs] == ["demo_000", "demo_001", "demo_002"]
    r = recs[1]
    assert r.frame_indices == r.annotated_indices == [0, 4, 8, 12, 16, 20]
    _, masks = render_demo_video(1, num_frames=21, seed=0, size=(r.height, r.width))
    for oid in r.obj_ids:
        np.testing.assert_array_equal(r.mask(oid, 8), masks[8, oid])
    img = r.image(20)
    assert img.shape == (r.height, r.width, 3) and img.dtype == np.uint8
    # Records survive pickling (spawned DataLoader workers) and decode lazily afterwards.
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.image(20), img)
    all_frames = read_raw_video("demo_001", str(raw / "demo_001.mp4"), frames="all")
    assert all_frames.frame_indices == list(range(21))


def test_raw_in_subfolders_and_split(tmp_path: Path) -> None:
    (tmp_path / "sav_000").mkdir()
    _one_video(tmp_path / "sav_000", "a")
    assert detect_format(str(tmp_path)) == "sav_raw"
    assert [r.video_id for r in iter_videos(str(tmp_path), split="train")] == ["a"]
    with pytest.raises(DataError, match=r"empty dataset.*split 'val'"):
        list(iter_videos(str(tmp_path), split="val"))


def test_real_sav_json_with_generated_video(real_sav: Path, tmp_path: Path) -> None:
    real = real_sav / "sav_000001_manual.json"
    if not real.exists():
        pytest.skip(f"{real} is absent")
    ann = load_annotation(str(real))
    assert len(ann["masklet"]) == 121 == math.ceil(483 / 4)
    assert ann["masklet_num"] == 5 and ann["masklet_id"] == [0, 1, 2, 3, 4]
    assert ann["masklet_first_appeared_frame"][3] == 113
    # Pair the real JSON with a generated 483-frame 480x848 (w x h) video.
    frames = [np.full((848, 480, 3), 90, dtype=np.uint8)] * 483
    (tmp_path / "sav_000001.mp4").write_bytes(encode_mp4(frames, crf=40, preset="ultrafast"))
    (tmp_path / "sav_000001_manual.json").write_bytes(real.read_bytes())
    rec = read_raw_video("sav_000001", str(tmp_path / "sav_000001.mp4"))
    assert (rec.height, rec.width) == (848, 480)
    assert rec.annotated_indices == list(range(0, 483, 4))
    obj3 = rec.objects[3]
    assert not obj3.masks[448].decode().any() and obj3.masks[452].decode().any()  # 113 * 4
    area = np.mean([rec.mask(0, f).sum() for f in rec.annotated_indices if rec.mask(0, f).any()])
    assert area == pytest.approx(ann["masklet_size_abs"][0], rel=1e-6)
    auto = real_sav / "sav_000001_auto.json"
    if auto.exists():
        (tmp_path / "sav_000001_auto.json").write_bytes(auto.read_bytes())
        rec_auto = next(iter(iter_videos(str(tmp_path), annotations="auto")))
        assert len(rec_auto.objects) == 9


def test_wrong_frame_count_json(tmp_path: Path) -> None:
    _, _, ann = _one_video(tmp_path, frames=9)
    ann["video_frame_count"] = 12.0
    (tmp_path / "v1_manual.json").write_text(json.dumps(ann))
    with pytest.raises(
        DataError, match=r"v1_manual.json: video_frame_count 12 disagrees.*9 frames"
    ):
        list(iter_videos(str(tmp_path)))


def test_rle_size_mismatch(tmp_path: Path) -> None:
    _, _, ann = _one_video(tmp_path, size=(64, 96))
    ann["masklet"][1][0]["size"] = [96, 64]
    (tmp_path / "v1_manual.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match=r"v1_manual.json: masklet\[1\]\[0\] RLE size \[96, 64\]"):
        list(iter_videos(str(tmp_path)))


def test_video_id_with_path_separator(tmp_path: Path) -> None:
    _, _, ann = _one_video(tmp_path)
    ann["video_id"] = "../v1"
    (tmp_path / "v1_manual.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match=r"invalid video id '\.\./v1' in .*v1_manual.json"):
        list(iter_videos(str(tmp_path)))


def test_zero_byte_and_truncated_videos(tmp_path: Path) -> None:
    _one_video(tmp_path)
    (tmp_path / "v1.mp4").write_bytes(b"")
    with pytest.raises(DataError, match=r"v1.mp4: zero-byte video file"):
        list(iter_videos(str(tmp_path)))
    data = encode_mp4(render_demo_video(0, num_frames=9, seed=1, size=(64, 96))[0])
    (tmp_path / "v1.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end: lost
    with pytest.raises(DataError, match=r"v1.mp4: cannot open video"):
        list(iter_videos(str(tmp_path)))


def test_empty_and_unknown_datasets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty dataset"):
        detect_format(str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        detect_format(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unknown dataset layout"):
        detect_format(str(tmp_path))
    frames = tmp_path / "f"
    (frames / "JPEGImages_24fps").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty dataset \(no sav_frames videos"):
        list(iter_videos(str(frames)))


def _frames_layout(root: Path) -> None:
    """SA-V val layout written by hand: 24 fps JPEGs, 6 fps per-object PNGs, a split list."""
    from PIL import Image

    imgs, masks = render_demo_video(0, num_frames=9, seed=2, size=(48, 64))
    for t in range(9):
        d = root / "JPEGImages_24fps" / "sav_1"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[t]).save(d / f"{t:05d}.jpg")
    for t in range(0, 9, 4):
        for k in range(masks.shape[1]):
            d = root / "Annotations_6fps" / "sav_1" / f"{k:03d}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(masks[t, k].astype(np.uint8) * 255).save(d / f"{t:05d}.png")
    (root / "sav_val.txt").write_text("sav_1\n")
    np.save(root / "masks.npy", masks)


def test_val_test_frame_layout_with_png_masks(tmp_path: Path) -> None:
    _frames_layout(tmp_path)
    assert detect_format(str(tmp_path)) == "sav_frames"
    (rec,) = list(iter_videos(str(tmp_path), split="val"))
    masks = np.load(tmp_path / "masks.npy")
    assert rec.frame_indices == list(range(9)) and rec.annotated_indices == [0, 4, 8]
    assert (rec.height, rec.width) == (48, 64) and rec.split == "val"
    for k in rec.obj_ids:
        np.testing.assert_array_equal(rec.mask(k, 4), masks[4, k])
    assert not rec.mask(rec.obj_ids[0], 5).any()  # frame 5 has no annotation
    with pytest.raises(DataError, match="split 'test' has no video list"):
        list(iter_videos(str(tmp_path), split="test"))


def test_frame_layout_rle_decodes_without_png(tmp_path: Path) -> None:
    _frames_layout(tmp_path)
    masks = np.load(tmp_path / "masks.npy")
    (tmp_path / "Annotations_json").mkdir()
    ann = sav_annotation("sav_1", masks)
    (tmp_path / "Annotations_json" / "sav_1_manual.json").write_text(json.dumps(ann))
    (rec,) = list(iter_videos(str(tmp_path)))
    m = rec.objects[0].masks[8]
    assert type(m).__name__ == "RleMask"
    np.testing.assert_array_equal(decode_rle(m.to_rle()), masks[8, 0])
