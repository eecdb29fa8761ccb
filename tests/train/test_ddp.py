"""Real torchrun launches (gloo): parameters stay identical across ranks after a few steps."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = str(Path(__file__).with_name("_ddp_worker.py"))
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


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = "1"
    return env


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
    cmd = [
        *_torchrun(),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        WORKER,
        str(out),
        *OVERRIDES,
    ]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    _check_identical(out, 2)


@pytest.mark.integration
def test_torchrun_two_nodes_c10d(tmp_path: Path) -> None:
    out = tmp_path / "nodes"
    out.mkdir()
    port = _free_port()
    procs = []
    for _node in range(2):
        cmd = [
            *_torchrun(),
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
                cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            errors.append(err[-3000:])
    assert not errors, errors
    _check_identical(out, 2)
