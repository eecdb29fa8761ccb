"""Real torchrun launches (gloo): parameters stay identical across ranks after a few steps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from .train_helpers import WORKER, free_port, run_two_ranks, torchrun, torchrun_env

OVERRIDES = [
    "experiment=smoke",
    "data=synthetic",
    "data.num_frames=2",
    "data.max_num_objects=1",
    "prompts.num_correction_pt_per_frame=1",
    "trainer.max_steps=3",
    "trainer.ckpt_every=0",
    "trainer.log_every=1",
    "trainer.image_every=0",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def _check_identical(out: Path, world: int) -> None:
    states = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert all(s["world_size"] == world and s["step"] == 3 for s in states)
    ref = states[0]["params"]
    for s in states[1:]:
        assert s["params"].keys() == ref.keys()
        for k, v in ref.items():
            assert torch.equal(s["params"][k], v), f"{k} differs across ranks"
    # and training did change the weights: compare with a fresh init is not possible here, so
    # check the per-rank train stats exist (rank 0) and the final model was exported
    assert (out / "model_final.pt").exists()
    assert (out / "train_stats.jsonl").read_text().count("\n") == 3


@pytest.mark.integration
def test_torchrun_two_procs(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    out.mkdir()
    res = run_two_ranks(out, OVERRIDES, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    _check_identical(out, 2)


@pytest.mark.integration
def test_torchrun_two_nodes_c10d(tmp_path: Path) -> None:
    out = tmp_path / "nodes"
    out.mkdir()
    port = free_port()
    procs = []
    for _node in range(2):
        cmd = [
            *torchrun(),
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "--rdzv-id",
            "sam2kf-test",
            WORKER,
            str(out),
            *OVERRIDES,
        ]
        procs.append(
            subprocess.Popen(
                cmd, env=torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            errors.append(err[-3000:])
    assert not errors, errors
    _check_identical(out, 2)
