"""Helpers shared by the tests that launch real ``torchrun`` jobs (plain functions, no fixtures)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# The training program every launch runs: ``_ddp_worker.py OUT_DIR OVERRIDE...``.
WORKER = str(Path(__file__).with_name("_ddp_worker.py"))


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
