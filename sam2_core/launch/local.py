"""The ``local`` engine: a launch spec run as local torchrun agents, one per "node".

Each agent gets the env a PyTorchJob pod gets from the Training Operator (``PET_NNODES``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``PORT``, ``MASTER_*``, ``PYTHONUNBUFFERED``), so
torchrun reads the same defaults and the trainer sees RANK/LOCAL_RANK/WORLD_SIZE as on the
cluster. The command is :func:`sam2_core.launch.spec.train_command`, the one the cluster runs.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from sam2_core.launch.launcher import JobFailed, JobResult, JobTimeout
from sam2_core.launch.spec import JobRun, LaunchSpec, train_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_argv(spec: LaunchSpec, run: JobRun) -> list[str]:
    """The cluster's container command, runnable here: same flags, this interpreter."""
    cmd = train_command(spec, run)
    exe_dir = os.path.dirname(sys.executable)
    sam2kf = os.path.join(exe_dir, "sam2kf")
    argv = [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
    # --no-python execs the console script; use this environment's copy if it is there.
    return [sam2kf if a == "sam2kf" and os.path.exists(sam2kf) else a for a in argv]


class LocalEngine:
    """Run the training command as ``spec.num_nodes`` local torchrun agents and wait.

    Output is streamed into ``out`` (this process's stdout by default).
    """

    def __init__(self, *, out: IO[str] | None = None, cwd: str | None = None) -> None:
        self.out = out or sys.stdout
        self.cwd = cwd

    def env_for(self, spec: LaunchSpec, *, node_rank: int, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(spec.env)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port),
                "PET_NNODES": str(spec.num_nodes),
                "PET_NODE_RANK": str(node_rank),
                "PET_NPROC_PER_NODE": str(spec.nproc_per_node),
                "WORLD_SIZE": str(spec.num_nodes * spec.nproc_per_node),
            }
        )
        if spec.gpus_per_process == 0:
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        return env

    def run(self, spec: LaunchSpec, run: JobRun, *, program: list[str] | None = None) -> JobResult:
        """Run and wait; ``program`` replaces ``sam2kf train`` (e.g. a script, for tests)."""
        argv = torchrun_argv(spec, run)
        if program is not None:
            argv = argv[: argv.index("--no-python") + 1] + list(program)
        port = _free_port()
        print(f"[local] {' '.join(argv)}  (x{spec.num_nodes} nodes)", file=self.out, flush=True)
        procs = [
            subprocess.Popen(
                argv,
                env=self.env_for(spec, node_rank=rank, port=port),
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank in range(spec.num_nodes)
        ]
        tail: collections.deque[str] = collections.deque(maxlen=50)
        pumps = [
            threading.Thread(target=_pump, args=(p, f"node{i}", self.out, tail), daemon=True)
            for i, p in enumerate(procs)
        ]
        for t in pumps:
            t.start()
        timeout_s = spec.timeout_s
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        try:
            while any(p.poll() is None for p in procs):
                if deadline is not None and time.monotonic() > deadline:
                    raise JobTimeout(f"local training did not finish within {timeout_s:.0f}s")
                if any(p.poll() not in (None, 0) for p in procs):
                    break  # one agent failed: do not wait for the others to hang in a collective
                time.sleep(0.2)
        finally:
            _stop_all(procs)
            for t in pumps:
                t.join(timeout=5.0)
        codes = [p.returncode for p in procs]
        if any(codes):
            raise JobFailed(
                f"local torchrun failed (exit codes {codes})\nlast {len(tail)} log lines:\n"
                + "\n".join(tail)
            )
        return JobResult("local", "", "Succeeded", False, log_tail=list(tail))


def _pump(
    proc: subprocess.Popen[str], tag: str, out: IO[str], tail: collections.deque[str]
) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        print(f"[{tag}] {line}", end="", file=out, flush=True)


def _stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
