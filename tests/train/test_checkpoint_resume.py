"""Checkpoints: atomic step dirs, keep-last-K, corrupt-newest fallback, SIGKILL + automatic resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sam2_core.train.checkpoint import CheckpointManager, CheckpointWarning

from .train_helpers import torchrun_env


def _state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def test_keep_last_and_incomplete_ignored(tmp_path: Path) -> None:
    mgr = CheckpointManager(str(tmp_path / "ckpt"), keep_last=2)
    for s in (1, 2, 3):
        mgr.save(s, _state(s))
    assert [s for s, _ in mgr.step_dirs()] == [3, 2]
    # a half-written directory (no marker) is never resumed from
    (tmp_path / "ckpt" / "step-000009").mkdir()
    (tmp_path / "ckpt" / "step-000009" / "state.pt").write_bytes(b"partial")
    step, state = mgr.load_latest()  # type: ignore[misc]
    assert step == 3 and state["model"]["w"][0] == 3.0
    mgr.prune()
    assert not (tmp_path / "ckpt" / "step-000009").exists()
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "ckpt").iterdir())


def test_corrupt_newest_falls_back_with_warning(tmp_path: Path) -> None:
    mgr = CheckpointManager(str(tmp_path / "ckpt"), keep_last=3)
    mgr.save(2, _state(2))
    url = mgr.save(4, _state(4))
    Path(url, "state.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.warns(CheckpointWarning, match="step-000004"):
        found = mgr.load_latest()
    assert found is not None and found[0] == 2


def _train_cmd(out: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sam2_core.cli",
        "train",
        "experiment=smoke",
        "data=synthetic",
        "data.num_frames=2",
        "data.max_num_objects=1",
        "prompts.num_correction_pt_per_frame=1",
        f"trainer.max_steps={steps}",
        "trainer.ckpt_every=2",
        "trainer.keep_last=2",
        "trainer.log_every=1",
        "trainer.image_every=0",
        "trainer.progress=false",
        f"trainer.output_dir={out}",
    ]


@pytest.mark.integration
def test_sigkill_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    steps = 6
    proc = subprocess.Popen(
        _train_cmd(out, steps), env=torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    marker = out / "checkpoints" / "step-000002" / "_COMPLETE"
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: somewhere after step 2
    proc.wait()
    assert not (out / "model_final.pt").exists()
    killed_at = max(
        int(p.name.split("-")[1])
        for p in (out / "checkpoints").glob("step-*")
        if (p / "_COMPLETE").exists()
    )
    assert killed_at < steps

    res = subprocess.run(
        _train_cmd(out, steps), env=torchrun_env(), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == killed_at
    assert summary["step"] == steps
    assert "resumed from checkpoint step" in res.stderr
    sd = torch.load(out / "model_final.pt", weights_only=True)["model"]
    assert len(sd) == 371
    stats = [json.loads(x) for x in (out / "train_stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == list(range(1, steps + 1))
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [
        "step-000004",
        "step-000006",
    ]
