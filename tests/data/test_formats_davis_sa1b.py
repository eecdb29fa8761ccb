"""DAVIS 2017 / MOSE palette-PNG reader (void 255, 480p, ImageSets) and the SA-1B reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_core.data.readers.davis import void_mask
from sam2_core.data.readers.formats import detect_format, iter_videos
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.rle import encode_rle

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (3 * 251) + [224, 224, 192]


def _palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    im.save(path)


def _jpg(path: Path, h: int, w: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _labels(t: int, h: int = 30, w: int = 40) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[2:10, 3 + t : 12 + t] = 1
    lab[15:25, 20:30] = 2 if t < 2 else 0  # object 2 disappears from frame 2 on
    lab[9:11, 3 + t : 12 + t] = 255  # void border, DAVIS style
    return lab


def _davis(root: Path, *, res: str | None = "480p", annotate: range = range(3)) -> None:
    for vid in ("bear", "swan"):
        for t in range(3):
            sub = Path(res) / vid if res else Path(vid)
            _jpg(root / "JPEGImages" / sub / f"{t:05d}.jpg", 30, 40, 40 * t)
            if t in annotate:
                _palette_png(root / "Annotations" / sub / f"{t:05d}.png", _labels(t))


def test_davis_palette_void_and_480p(tmp_path: Path) -> None:
    _davis(tmp_path)
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("swan\n")
    assert detect_format(str(tmp_path)) == "davis"
    recs = list(iter_videos(str(tmp_path)))
    assert [r.video_id for r in recs] == ["bear", "swan"]
    r = recs[0]
    assert r.obj_ids == [1, 2]  # 255 (void) is not an object
    assert (r.height, r.width) == (30, 40)
    assert r.frame_indices == r.annotated_indices == [0, 1, 2]
    for t in range(3):
        lab = _labels(t)
        np.testing.assert_array_equal(r.mask(1, t), lab == 1)
        np.testing.assert_array_equal(r.mask(2, t), lab == 2)
        assert not (r.mask(1, t) & (lab == 255)).any()
    assert not r.mask(2, 2).any()
    png = tmp_path / "Annotations" / "480p" / "bear" / "00001.png"
    np.testing.assert_array_equal(void_mask(str(png)), _labels(1) == 255)
    assert r.image(1).mean() == pytest.approx(40, abs=2)
    (val,) = list(iter_videos(str(tmp_path), split="val"))
    assert val.video_id == "swan" and val.split == "val"


def test_mose_layout_first_frame_only(tmp_path: Path) -> None:
    _davis(tmp_path, res=None, annotate=range(1))  # MOSE valid: only frame 0 annotated
    r = next(iter(iter_videos(str(tmp_path))))
    assert r.frame_indices == [0, 1, 2] and r.annotated_indices == [0]
    assert r.obj_ids == [1, 2]
    assert not r.mask(1, 1).any()  # not annotated -> empty


def test_davis_list_with_path_separator(tmp_path: Path) -> None:
    _davis(tmp_path)
    (tmp_path / "train.txt").write_text("bear\n../etc\n")
    with pytest.raises(DataError, match=r"invalid video id '\.\./etc' in .*train.txt"):
        list(iter_videos(str(tmp_path), split="train"))


def test_davis_annotation_size_mismatch(tmp_path: Path) -> None:
    _davis(tmp_path)
    _palette_png(tmp_path / "Annotations" / "480p" / "bear" / "00002.png", np.zeros((20, 40)))
    with pytest.raises(DataError, match=r"bear/00002.png: size 20x40 differs"):
        list(iter_videos(str(tmp_path)))


def _sa1b(root: Path, stem: str = "sa_1", h: int = 24, w: int = 32) -> list[np.ndarray]:
    _jpg(root / f"{stem}.jpg", h, w, 100)
    masks = [np.zeros((h, w), bool) for _ in range(3)]
    masks[0][2:8, 2:9] = True
    masks[1][10:20, 5:30] = True  # masks[2] stays empty: area 0 is dropped
    anns = [
        {"id": 500 + k, "segmentation": encode_rle(m), "area": int(m.sum()), "bbox": [0, 0, 1, 1]}
        for k, m in enumerate(masks)
    ]
    info = {"image_id": 1, "width": w, "height": h, "file_name": f"{stem}.jpg"}
    (root / f"{stem}.json").write_text(json.dumps({"image": info, "annotations": anns}))
    return masks


def test_sa1b_single_frame_videos(tmp_path: Path) -> None:
    masks = _sa1b(tmp_path)
    _sa1b(tmp_path, "sa_2")
    assert detect_format(str(tmp_path)) == "sa1b"
    recs = list(iter_videos(str(tmp_path)))
    assert [r.video_id for r in recs] == ["sa_1", "sa_2"]
    r = recs[0]
    assert r.frame_indices == r.annotated_indices == [0]
    assert r.obj_ids == [500, 501]
    np.testing.assert_array_equal(r.mask(501, 0), masks[1])
    assert r.image(0).shape == (24, 32, 3)


def test_sa1b_rle_size_mismatch(tmp_path: Path) -> None:
    _sa1b(tmp_path)
    data = json.loads((tmp_path / "sa_1.json").read_text())
    data["image"]["height"] = 48
    (tmp_path / "sa_1.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"sa_1.json: annotations\[0\] RLE size \[24, 32\]"):
        list(iter_videos(str(tmp_path)))


def test_sa1b_missing_json(tmp_path: Path) -> None:
    _jpg(tmp_path / "sa_9.jpg", 8, 8, 0)
    with pytest.raises(DataError, match=r"sa_9.json: annotation file not found"):
        list(iter_videos(str(tmp_path)))
