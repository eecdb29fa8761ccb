"""The local engine: the PyTorchJob command under real torchrun processes, same env contract."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from sam2_core.launch.launcher import JobFailed
from sam2_core.launch.local import LocalEngine, torchrun_argv
from sam2_core.launch.spec import JobRun, LaunchSpec

SCRIPT = """
import os, sys
import torch.distributed as dist
dist.init_process_group("gloo")
import torch
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
print(f"rank={os.environ['RANK']} world={os.environ['WORLD_SIZE']} node={os.environ['GROUP_RANK']} "
      f"sum={int(t.item())} bucket={os.environ.get('DATA_BUCKET')}", flush=True)
dist.destroy_process_group()
if os.environ.get("FAIL_RANK") == os.environ["RANK"]:
    print("boom: simulated failure", flush=True)
    sys.exit(3)
"""


def test_torchrun_argv_matches_the_pytorchjob_command() -> None:
    argv = torchrun_argv(
        LaunchSpec(nproc_per_node=2), JobRun(train_args=["model=tiny", "trainer.max_steps=2"])
    )
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in argv and "--no-python" in argv
    assert argv[-3:] == ["train", "model=tiny", "trainer.max_steps=2"]


def test_two_local_nodes_rendezvous_with_the_operator_env(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    out = io.StringIO()
    spec = LaunchSpec(
        engine="local", num_nodes=2, env={"DATA_BUCKET": "gs://b"}, timeout_hours=120 / 3600
    )
    res = LocalEngine(out=out).run(spec, JobRun(), program=[sys.executable, str(script)])
    text = out.getvalue()
    assert res.state == "Succeeded", text
    # Two "pods" of one process each: world 2, both saw the all-reduce of 1 + 2.
    assert "rank=0 world=2 node=0 sum=3 bucket=gs://b" in text
    assert "rank=1 world=2 node=1 sum=3 bucket=gs://b" in text


@pytest.mark.integration
def test_local_failure_carries_the_last_lines(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    spec = LaunchSpec(engine="local", env={"FAIL_RANK": "0"}, timeout_hours=120 / 3600)
    with pytest.raises(JobFailed, match="simulated failure"):
        LocalEngine(out=io.StringIO()).run(spec, JobRun(), program=[sys.executable, str(script)])
