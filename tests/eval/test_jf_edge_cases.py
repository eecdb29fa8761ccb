"""J&F edge cases on small hand-made masks, and the fast path against a plain reference."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sam2_core.data.readers.records import DataError
from sam2_core.eval.boundary import (
    boundary_map,
    disk,
    f_measure,
    frame_scores,
    tolerance_radius,
)
from sam2_core.eval.jf import SequenceScorer, evaluate_predictions


# ------------------------------------------------------------------ straightforward reference
def _ref_bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary map written the long way: shifted copies, then the last row/column rules."""
    s = seg.astype(bool)
    e = np.zeros_like(s)
    so = np.zeros_like(s)
    se = np.zeros_like(s)
    e[:, :-1] = s[:, 1:]
    so[:-1, :] = s[1:, :]
    se[:-1, :-1] = s[1:, 1:]
    b = (s ^ e) | (s ^ so) | (s ^ se)
    b[-1, :] = s[-1, :] ^ e[-1, :]
    b[:, -1] = s[:, -1] ^ so[:, -1]
    b[-1, -1] = False
    return b


def _ref_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Full-frame J and F with cv2.dilate and the disk (the textbook computation)."""
    inter, total = int((pred & gt).sum()), int(pred.sum() + gt.sum())
    j = 1.0 if total == 0 else inter / (total - inter)
    r = math.ceil(0.008 * np.linalg.norm(gt.shape))
    bp, bg = _ref_bmap(pred), _ref_bmap(gt)
    k = disk(r)
    dp = cv2.dilate(bp.astype(np.uint8), k) > 0
    dg = cv2.dilate(bg.astype(np.uint8), k) > 0
    return j, f_measure(int(bp.sum()), int(bg.sum()), int((bp & dg).sum()), int((bg & dp).sum()))


# ------------------------------------------------------------------ primitives
def test_disk_matches_skimage_definition() -> None:
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert disk(18).sum() == 1009


def test_tolerance_radius() -> None:
    assert tolerance_radius((48, 64)) == 1
    assert tolerance_radius((72, 96)) == 1
    assert tolerance_radius((180, 320)) == 3
    assert tolerance_radius((480, 854)) == 8
    assert tolerance_radius((1080, 1920)) == 18


def test_boundary_map_definition() -> None:
    m = np.zeros((4, 5), bool)
    m[1:3, 1:3] = True
    b = boundary_map(m)
    # Offset half a pixel towards the origin: row 0 / column 0 next to the box are boundary.
    assert b.astype(int).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    full = np.ones((3, 3), bool)
    assert not boundary_map(full).any()  # a full-frame mask has no boundary pixel
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True
    assert boundary_map(corner).astype(int).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_both_empty_and_one_empty() -> None:
    z = np.zeros((10, 12), bool)
    m = z.copy()
    m[2:6, 3:8] = True
    assert frame_scores(z, z) == (1.0, 1.0)
    assert frame_scores(z, m) == (0.0, 0.0)  # missed: J 0, P 1 R 0 -> F 0
    assert frame_scores(m, z) == (0.0, 0.0)  # false positive: J 0, P 0 R 1 -> F 0
    assert frame_scores(m, m) == (1.0, 1.0)
    full = np.ones_like(z)
    # Full-frame prediction has an empty boundary map: P = 1, R = 0.
    j, f = frame_scores(full, m)
    assert j == pytest.approx(20 / 120) and f == 0.0


def test_shifted_box_reference_numbers() -> None:
    """2-px shifted 20x20 box on 48x64 (tolerance 1 px): J = 360/440, F = 0.525."""
    gt = np.zeros((48, 64), bool)
    gt[10:30, 10:30] = True
    pred = np.zeros_like(gt)
    pred[10:30, 12:32] = True
    j, f = frame_scores(pred, gt)
    assert j == pytest.approx(360 / 440, abs=1e-12)
    assert f == pytest.approx(0.525, abs=1e-12)


def _random_masks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(
                m,
                (int(rng.integers(-5, w + 5)), int(rng.integers(-5, h + 5))),
                int(rng.integers(1, max(h, w) // 2 + 2)),
                1,
                -1,
            )
        elif kind == 1:
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            m[y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = 1
        else:
            m |= (rng.random((h, w)) < 0.02).astype(np.uint8)
    return m.astype(bool)


def test_fast_path_equals_full_frame_reference() -> None:
    """Cropping and distance-transform matching give exactly the textbook result.

    Random shapes include masks touching every border, isolated pixels, full frames and empties.
    """
    rng = np.random.default_rng(0)
    shapes = [(48, 64), (31, 17), (120, 200), (1, 9), (9, 1), (2, 2), (300, 500)]
    n = 0
    for h, w in shapes:
        for _ in range(40 if h * w < 50_000 else 8):
            gt, pred = _random_masks(rng, h, w), _random_masks(rng, h, w)
            if rng.random() < 0.1:
                pred = np.ones_like(pred)
            assert frame_scores(pred, gt) == _ref_scores(pred, gt), (h, w)
            n += 1
    assert n > 200


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 13, 18, 36])
def test_distance_matching_equals_dilation_for_radii(radius: int) -> None:
    rng = np.random.default_rng(radius)
    gt = rng.random((90, 110)) < 0.01
    pred = rng.random((90, 110)) < 0.01
    bp, bg = _ref_bmap(pred), _ref_bmap(gt)
    dg = cv2.dilate(bg.astype(np.uint8), disk(radius)) > 0
    dp = cv2.dilate(bp.astype(np.uint8), disk(radius)) > 0
    want = f_measure(int(bp.sum()), int(bg.sum()), int((bp & dg).sum()), int((bg & dp).sum()))
    from sam2_core.eval.boundary import boundary_f

    assert boundary_f(pred, gt, radius) == want


# ------------------------------------------------------------------ sequences
def _box(h: int, w: int, y: int, x: int, s: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y : y + s, x : x + s] = True
    return m


def test_frames_before_first_appearance_not_counted() -> None:
    """Absent on frames 1-2 in GT and prediction, correct on 3, missed on 4 -> 50, not 75."""
    z = np.zeros((48, 64), bool)
    b = _box(48, 64, 5, 5, 10)
    sc = SequenceScorer("v", obj_name="000")
    for name, g, p in [("1", z, z), ("2", z, z), ("3", b, b), ("4", b, z)]:
        sc.feed(name, g, p)
    (o,) = sc.results()
    assert o.counted_frames == ["3", "4"]
    assert o.j_mean == 50.0 and o.f_mean == 50.0
    assert o.evaluated_frames == ["1", "2", "3", "4"]


def test_false_positive_before_gt_appears_starts_counting() -> None:
    z = np.zeros((48, 64), bool)
    b = _box(48, 64, 5, 5, 10)
    sc = SequenceScorer("v")
    for name, g, p in [("1", z, z), ("2", z, b), ("3", b, b)]:
        sc.feed(name, g, p)
    (o,) = sc.results()
    assert o.counted_frames == ["2", "3"] and o.J == [0.0, 1.0]


def test_object_only_in_prediction_is_not_reported_davis() -> None:
    g = np.zeros((20, 30), np.uint8)
    g[2:8, 2:8] = 1
    p = g.copy()
    p[10:15, 10:20] = 7  # an object the GT never has
    sc = SequenceScorer("v")
    sc.feed("a", g, p)
    sc.feed("b", g, p)
    assert [o.obj for o in sc.results()] == ["001"]


# ------------------------------------------------------------------ folders
def _write(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        im.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [9] * 759)
    im.save(path)


def _sav_video(root: Path, vid: str, frames: list[str], masks: dict[str, list[np.ndarray]]) -> None:
    for obj, ms in masks.items():
        for f, m in zip(frames, ms):
            _write(root / vid / obj / f"{f}.png", m.astype(np.uint8) * 255)


def test_missing_prediction_frame_error_or_empty(tmp_path: Path) -> None:
    b = _box(24, 32, 3, 3, 8)
    frames = ["00000", "00004", "00008"]
    _sav_video(tmp_path / "gt", "v1", frames, {"000": [b, b, b]})
    _sav_video(tmp_path / "pred", "v1", frames[:2], {"000": [b, b]})
    # Default protocol skips the last frame: nothing missing.
    ok = evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"))
    assert ok.JF == 100.0
    with pytest.raises(DataError, match=r"00008\.png"):
        evaluate_predictions(
            gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"), skip_first_and_last=False
        )
    res = evaluate_predictions(
        gt_dir=str(tmp_path / "gt"),
        pred_dir=str(tmp_path / "pred"),
        skip_first_and_last=False,
        missing="empty",
    )
    assert len(res.missing_frames) == 1 and res.missing_frames[0].endswith("00008.png")
    assert pytest.approx(200 / 3) == res.J
    assert res.summary()["missing_frames_scored_as_empty"] == 1


def test_strict_video_sets(tmp_path: Path) -> None:
    b = _box(24, 32, 3, 3, 8)
    fr = ["00000", "00004", "00008"]
    _sav_video(tmp_path / "gt", "v1", fr, {"000": [b, b, b]})
    _sav_video(tmp_path / "gt", "v2", fr, {"000": [b, b, b]})
    _sav_video(tmp_path / "pred", "v1", fr, {"000": [b, b, b]})
    (tmp_path / "pred" / "results.csv").write_text("old")  # files in the roots are ignored
    with pytest.raises(DataError, match="v2"):
        evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"))
    res = evaluate_predictions(
        gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"), strict=False
    )
    assert [v.video for v in res.videos] == ["v1"]


def test_sav_png_with_two_objects_is_rejected(tmp_path: Path) -> None:
    b = _box(24, 32, 3, 3, 8).astype(np.uint8)
    two = b * 255
    two[20:22, 20:22] = 128
    fr = ["00000", "00004", "00008"]
    for root in ("gt", "pred"):
        for f in fr:
            _write(tmp_path / root / "v" / "000" / f"{f}.png", b * 255)
    _write(tmp_path / "pred" / "v" / "000" / "00004.png", two)
    with pytest.raises(DataError, match=r"pred/v/000/00004\.png.*one object per PNG"):
        evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"))


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    fr = ["00000", "00004", "00008"]
    for f in fr:
        _write(tmp_path / "gt" / "v" / f"{f}.png", np.zeros((10, 10)), palette=True)
        _write(tmp_path / "pred" / "v" / f"{f}.png", np.zeros((10, 11)), palette=True)
    with pytest.raises(DataError, match="shape mismatch"):
        evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"))


def test_sav_object_never_in_evaluated_gt_is_left_out_with_warning(tmp_path: Path) -> None:
    z = np.zeros((24, 32), bool)
    b = _box(24, 32, 3, 3, 8)
    fr = ["00000", "00004", "00008"]
    # Object 001 appears only on the first (skipped) frame.
    _sav_video(tmp_path / "gt", "v", fr, {"000": [b, b, b], "001": [b, z, z]})
    _sav_video(tmp_path / "pred", "v", fr, {"000": [b, b, b], "001": [b, z, z]})
    res = evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"))
    assert [o.obj for o in res.objects] == ["000"]
    assert len(res.warnings) == 1 and "v/001" in res.warnings[0]


def test_davis_layout_and_results_csv_format(tmp_path: Path) -> None:
    g = np.zeros((30, 40), np.uint8)
    g[2:10, 2:10] = 1
    g[15:25, 20:35] = 2
    p = g.copy()
    p[15:25, 20:35] = 0  # object 2 missed everywhere
    name = "a_rather_long_video_name"
    for f in ["00000", "00001", "00002", "00003"]:
        _write(tmp_path / "gt" / name / f"{f}.png", g, palette=True)
        _write(tmp_path / "pred" / name / f"{f}.png", p, palette=True)
    res = evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(tmp_path / "pred"))
    assert [o.obj for o in res.objects] == ["001", "002"]
    assert res.JF == 50.0
    pad = " " * (len(name) - len("sequence"))
    assert res.results_csv().splitlines() == [
        f"sequence{pad},obj,  J&F,    J,    F",
        f"Global score{' ' * (len(name) - 12)},   , 50.0, 50.0, 50.0",
        f"{name},001, 100.0, 100.0, 100.0",
        f"{name},002,  0.0,  0.0,  0.0",
    ]
    assert res.per_video()[0]["num_frames"] == 2
