"""Multi-step trajectory parity with Meta's trainer (benchmarks/trajectory.py), short version.

Needs the reference environment of ``benchmarks/reference/setup_env.sh`` (sam2 1.1.0 from PyPI):
``$SAM2KF_REF_VENV`` or ``.venv-ref`` in the repository root; skipped when neither exists.
12 steps of the tiny model at 128 px (about 30 s on 2 cores): same parameter groups, same lr and
weight decay of every group at every step, loss terms within 1e-4 relative at every step, final
weights within 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_trajectory_matches_meta(tmp_path: Path, ref_venv: Path | None) -> None:
    if ref_venv is None:
        pytest.skip(
            "no reference environment: build it with "
            "`bash benchmarks/reference/setup_env.sh .venv-ref` (or set SAM2KF_REF_VENV)"
        )
    out = tmp_path / "traj.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "trajectory.py"),
            "--reference",
            str(ref_venv),
            "--steps",
            "12",
            "--json",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["groups"]["identical_membership"], rep["groups"]
    assert rep["schedules_max_rel"] <= 1e-15
    assert [s["decisions"]["use_pt_input"] for s in rep["per_step"]].count(True) >= 2
    assert rep["loss_max_rel"] <= 1e-4, res.stdout[-3000:]
    assert rep["params"]["total"]["rel"] <= 1e-4
    assert res.returncode == 0, res.stdout[-3000:]
