"""J&F reproduces the official SA-V evaluator's output on ../shared/golden/jf (both protocols)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_core.eval.jf import evaluate_predictions, read_label_png

MODES = [("skip_first_and_last", True), ("do_not_skip_first_and_last", False)]
TOL = 1e-6


@pytest.fixture(scope="module")
def jf_dir(golden: Path) -> Path:
    d = golden / "jf"
    if not (d / "results.json").is_file():
        pytest.skip(f"{d}/results.json is absent")
    return d


def _expected(jf_dir: Path, mode: str) -> dict:
    return json.loads((jf_dir / "results.json").read_text())["results"][mode]


@pytest.mark.parametrize(("mode", "skip"), MODES)
def test_golden_global_object_frame(jf_dir: Path, mode: str, skip: bool) -> None:
    exp = _expected(jf_dir, mode)
    res = evaluate_predictions(
        gt_dir=str(jf_dir / "gt"), pred_dir=str(jf_dir / "pred"), skip_first_and_last=skip
    )
    assert pytest.approx(exp["global"]["J&F"], abs=TOL) == res.JF
    assert pytest.approx(exp["global"]["J"], abs=TOL) == res.J
    assert pytest.approx(exp["global"]["F"], abs=TOL) == res.F
    got = res.per_object()
    assert set(got) == set(exp["per_object"])
    for vid, objs in exp["per_object"].items():
        assert set(got[vid]) == set(objs)
        for obj, m in objs.items():
            for k in ("J", "F", "J&F"):
                assert got[vid][obj][k] == pytest.approx(m[k], abs=TOL), (vid, obj, k)
    for o in res.objects:
        pf = exp["per_frame"][o.video][o.obj]
        assert o.evaluated_frames == pf["evaluated_frames"]
        assert o.counted_frames == pf["counted_frames"]
        np.testing.assert_allclose(o.J, pf["J"], atol=TOL, rtol=0)
        np.testing.assert_allclose(o.F, pf["F"], atol=TOL, rtol=0)
    # The official results.csv, byte for byte.
    assert res.results_csv() == exp["results_csv"]
    assert res.results_csv() == (jf_dir / f"results_{mode}.csv").read_text()


def test_golden_writers_and_workers(jf_dir: Path, tmp_path: Path) -> None:
    exp = _expected(jf_dir, "skip_first_and_last")
    res = evaluate_predictions(
        gt_dir=str(jf_dir / "gt"), pred_dir=str(jf_dir / "pred"), num_workers=2
    )
    assert pytest.approx(exp["global"]["J&F"], abs=TOL) == res.JF
    paths = res.write(str(tmp_path))
    assert (tmp_path / "results.csv").read_text() == exp["results_csv"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["J&F"] == pytest.approx(exp["global"]["J&F"], abs=TOL)
    assert summary["num_objects"] == 6 and summary["num_videos"] == 3
    rows = (tmp_path / "per_video.csv").read_text().splitlines()
    assert rows[0] == "video,num_objects,num_frames,J&F,J,F,layout"
    assert [r.split(",")[0] for r in rows[1:]] == ["sav_vidA", "sav_vidB", "sav_vidC"]
    assert "per_frame_json" in paths


def _to_davis(src: Path, dst: Path) -> dict[str, int]:
    """Rewrite an SA-V-layout root as DAVIS palette PNGs (objects do not overlap here)."""
    labels: dict[str, int] = {}
    for vid in sorted(p for p in src.iterdir() if p.is_dir()):
        objs = sorted(p.name for p in vid.iterdir() if p.is_dir())
        frames = sorted({f.name for o in objs for f in (vid / o).glob("*.png")})
        out = dst / vid.name
        out.mkdir(parents=True)
        for f in frames:
            lab = None
            for i, o in enumerate(objs):
                labels[o] = i + 1
                p = vid / o / f
                if not p.exists():
                    continue
                m = read_label_png(str(p)) > 0
                lab = np.zeros(m.shape, np.uint8) if lab is None else lab
                assert not (lab[m] > 0).any()
                lab[m] = i + 1
            assert lab is not None
            im = Image.fromarray(lab, mode="P")
            im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
            im.save(out / f)
    return labels


@pytest.mark.parametrize(("mode", "skip"), MODES)
def test_golden_in_davis_layout(jf_dir: Path, tmp_path: Path, mode: str, skip: bool) -> None:
    """Same masks as palette PNGs: identical per-object scores (objects never overlap here).

    Every object folder of a golden video has the same frames except where the prediction has
    extra frames (ignored either way), so the frame protocol is the same in both layouts.
    """
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _to_davis(jf_dir / "gt", gt)
    _to_davis(jf_dir / "pred", pred)
    shutil.copy(jf_dir / "results.json", tmp_path / "unrelated.json")  # non-folder: ignored
    exp = _expected(jf_dir, mode)
    res = evaluate_predictions(gt_dir=str(gt), pred_dir=str(pred), skip_first_and_last=skip)
    assert {v.layout for v in res.videos} == {"davis"}
    assert pytest.approx(exp["global"]["J&F"], abs=TOL) == res.JF
    for o in res.objects:
        sav_obj = f"{int(o.obj) - 1:03d}"
        m = exp["per_object"][o.video][sav_obj]
        assert o.j_mean == pytest.approx(m["J"], abs=TOL)
        assert o.f_mean == pytest.approx(m["F"], abs=TOL)
        assert o.counted_frames == exp["per_frame"][o.video][sav_obj]["counted_frames"]
