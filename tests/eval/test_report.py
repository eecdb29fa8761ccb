"""HTML report (self-contained, sortable, overlays, comparison), metric exports, the CLI, and a
headless-Chromium rendering check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sam2_core.cli import main as cli_main
from sam2_core.eval.jf import evaluate_predictions
from sam2_core.eval.report import (
    DirOverlaySource,
    kfp_v1_metrics,
    log_kfp_metrics,
    log_tensorboard,
    metrics_dict,
    overlay,
    write_report,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def jf_dir(golden: Path) -> Path:
    d = golden / "jf"
    if not (d / "gt").is_dir():
        pytest.skip(f"{d}/gt is absent")
    return d


@pytest.fixture(scope="module")
def report(jf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Comparison report: golden predictions (this run) vs the GT itself (reference)."""
    out = tmp_path_factory.mktemp("report")
    res = evaluate_predictions(gt_dir=str(jf_dir / "gt"), pred_dir=str(jf_dir / "pred"))
    ref = evaluate_predictions(gt_dir=str(jf_dir / "gt"), pred_dir=str(jf_dir / "gt"), strict=False)
    return Path(
        write_report(
            str(out / "report.html"),
            res,
            pred_dir=str(jf_dir / "pred"),
            source=DirOverlaySource(str(jf_dir / "gt")),
            compare=ref,
            compare_pred_dir=str(jf_dir / "gt"),
            labels=("challenger", "champion"),
        )
    )


def test_report_is_self_contained_with_table_and_strips(report: Path) -> None:
    text = report.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)  # nothing external
    assert text.count('<img class="strip"') == 3  # 3 videos, all among the worst 5
    assert "data:image/jpeg;base64," in text
    assert "function sortTable" in text and text.count('onclick="sortTable(this)"') == 8
    assert "55.4" in text and "100.0" in text and "Δ J&amp;F" in text
    assert "-44.61" in text  # global delta challenger - champion


def test_overlay_colours() -> None:
    img = np.zeros((30, 30, 3), np.uint8)
    gt = np.zeros((30, 30), bool)
    pred = np.zeros((30, 30), bool)
    gt[5:20, 5:20] = True
    pred[10:25, 10:25] = True
    out = overlay(img, gt, pred)
    assert out[7, 7, 1] > 100 and out[7, 7, 0] < 10  # GT only: green
    assert out[22, 22, 0] > 100 and out[22, 22, 1] < 30  # prediction only: red
    assert out[14, 14, 0] > 100 and out[14, 14, 1] > 100 and out[14, 14, 2] < 10  # both: yellow
    assert not out[0, 29].any()


def test_metric_exports(jf_dir: Path, tmp_path: Path) -> None:
    res = evaluate_predictions(gt_dir=str(jf_dir / "gt"), pred_dir=str(jf_dir / "pred"))
    m = metrics_dict(res)
    assert m["J&F"] == pytest.approx(55.392797, abs=1e-6) and m["num_objects"] == 6
    v1 = kfp_v1_metrics(res)
    assert {x["name"] for x in v1["metrics"]} >= {"j-and-f", "j-mean", "f-mean"}
    logged: dict[str, float] = {}

    class Metrics:  # the log_metric surface of kfp.dsl.Metrics
        def log_metric(self, k: str, v: float) -> None:
            logged[k] = v

    log_kfp_metrics(Metrics(), res)
    assert logged == m
    log_tensorboard(str(tmp_path / "tb"), res, step=3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    (ev,) = acc.Scalars("eval/J&F")
    assert ev.step == 3 and ev.value == pytest.approx(55.392797, abs=1e-4)
    assert "eval_video/sav_vidC/J&F" in acc.Tags()["scalars"]


def test_cli_scores_folders_like_the_official_tool(
    jf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(jf_dir / "pred", pred)
    rc = cli_main(
        [
            "evaluate", "--gt-dir", str(jf_dir / "gt"), "--pred-dir", str(pred),
            "--do-not-skip-first-and-last", "-n", "1", "-q",
            "--kfp-metrics", str(tmp_path / "m.json"),
        ]
    )  # fmt: skip
    assert rc == 0
    expected = (jf_dir / "results_do_not_skip_first_and_last.csv").read_text()
    assert (pred / "results.csv").read_text() == expected
    assert json.loads((pred / "summary.json").read_text())["J&F"] == pytest.approx(
        60.186567, abs=1e-6
    )
    assert (pred / "report.html").is_file() and (tmp_path / "m.json").is_file()
    assert "Global score: J&F: 60.2 J: 65.3 F: 55.1" in capsys.readouterr().out
    assert cli_main(["evaluate", "--gt-dir", str(jf_dir / "gt")]) == 2
    # A missing input folder is bad input: exit status 2 (sam2_core.cli).
    assert cli_main(["evaluate", "--gt-dir", str(tmp_path / "nope"), "--pred-dir", str(pred)]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1280,2000", report.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    import cv2

    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (2000, 1280)
    assert img.std() > 20  # not blank
    b, g, r = (img[..., i].astype(int) for i in range(3))
    green = (g > 150) & (r < 80) & (b < 80)  # GT overlay
    red = (r > 150) & (g < 80) & (b < 80)  # prediction overlay
    yellow = (r > 120) & (g > 120) & (b < 60)  # overlap
    assert green.sum() > 200 and red.sum() > 200 and yellow.sum() > 200
