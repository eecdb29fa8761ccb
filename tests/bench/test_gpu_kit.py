"""The GPU validation kit (benchmarks/gpu/run.sh) in its ``--cpu`` dry-run mode: tiny sizes on
CPU, every section (pytest -m gpu, bf16 parity, training-step timings with and without
activation checkpointing and torch.compile, VOS frames/s) must produce a result. Meta's cases
run when the reference environment exists (``$SAM2KF_REF_VENV`` or ``.venv-ref``), otherwise
they are recorded as skipped. About 2 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_kit_cpu_dry_run(tmp_path: Path, ref_venv: Path | None) -> None:
    meta = ref_venv is not None
    out = tmp_path / "kit.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu" / "kit.py"), "--cpu", "--out", str(out)]
    cmd += ["--threads", "1", "--budget-s", "600"]
    if ref_venv is not None:
        src = ref_venv / "src" / "sam2-1.1.0"
        cmd += ["--meta-python", str(ref_venv / "bin" / "python"), "--sam2-src", str(src)]
    res = subprocess.run(
        cmd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["env"]["mode"] == "cpu"
    assert r["pytest_gpu"]["rc"] in (0, 5), r["pytest_gpu"]
    bf16 = r["bf16_parity"]
    assert "error" not in bf16, bf16
    assert bf16["image_encoder_rel"]["vision_features"] < 0.05
    assert bf16["train_step"]["grad_cosine"] > 0.99
    names = ["train_ours", "train_ours_ckpt", "train_ours_compile", "train_ours_compile_ckpt"]
    names += ["vos_ours"] + (["train_meta", "train_meta_ckpt", "vos_meta"] if meta else [])
    for name in names:
        assert "error" not in r[name], (name, r[name])
    for name in [n for n in names if n.startswith("train")]:
        assert r[name]["s_per_step"] > 0 and r[name]["peak_mem_gb"] > 0
    assert r["vos_ours"]["frames"] == 6
    if meta:
        assert r["vos_meta"]["frames"] == 6
    else:
        assert "meta_skipped" in r
