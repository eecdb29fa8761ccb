"""Helpers shared by the training tests: the cheapest real training run, and real ``torchrun``
launches of it (plain functions, no fixtures)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# The training program every launch runs: ``_ddp_worker.py OUT_DIR OVERRIDE...``.
WORKER = str(Path(__file__).with_name("_ddp_worker.py"))


def tiny_training_overrides(out: str | Path, steps: int, *extra: str) -> list[str]:
    """Config overrides of the cheapest training the smoke tests run (64 px, one object, a
    checkpoint every step), writing into ``out``; ``extra`` overrides come last."""
    return [
        "experiment=smoke",
        "data=synthetic",
        "data.resolution=64",
        "model.image_size=64",
        "data.num_frames=2",
        "data.max_num_objects=1",
        "prompts.num_correction_pt_per_frame=1",
        f"trainer.max_steps={steps}",
        "trainer.ckpt_every=1",
        "trainer.keep_last=1",
        "trainer.log_every=1",
        "trainer.image_every=0",
        "trainer.progress=false",
        f"trainer.output_dir={out}",
        *extra,
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun() -> list[str]:
    """The ``torchrun`` of this interpreter's environment (or ``python -m`` when not on PATH)."""
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def torchrun_env() -> dict[str, str]:
    """This process's environment without its own distributed settings, one thread per rank."""
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_two_ranks(
    out: Path, overrides: list[str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run :data:`WORKER` as two processes of one node on loopback, writing into ``out``."""
    cmd = [
        *torchrun(),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        WORKER,
        str(out),
        *overrides,
    ]
    return subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True, timeout=timeout)
