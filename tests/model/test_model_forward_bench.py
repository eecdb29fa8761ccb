"""Smoke test of ``benchmarks/model_forward.py`` (tiny model, small input, 1 iteration)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "model_forward.py"


def test_model_forward_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sam2_core.model.predictor")
    spec = importlib.util.spec_from_file_location("model_forward_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(bench)
    out_json = tmp_path / "bench.json"
    argv = ["--models", "tiny", "--resolution", "128", "--iters", "1", "--frames", "2"]
    argv += ["--video-hw", "48", "80", "--device", "cpu", "--json", str(out_json)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "frames/s" in printed
    (result,) = json.loads(out_json.read_text())
    assert result["model"] == "tiny" and result["encoder_images_per_s"] > 0
    assert result["tracking_frames_per_s"] > 0 and result["tracking_frames"] == 2
