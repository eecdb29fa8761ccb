"""TorchX component: the pinned torchx build, the AppDef, a Volcano dry-run without a cluster,
and a real 2-process local_cwd run on CPU (integration)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sam2_core import image_ref

from .k8s_helpers import REPO

COMPONENT = REPO / "sam2_core" / "launch" / "torchx_app.py"
TORCHX_PIN = "2026.10.26"


def _torchx(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    bindir = str(Path(sys.executable).parent)
    exe = Path(bindir) / "torchx"
    if not exe.exists():
        pytest.skip("torchx is not installed (pip install -e '.[torchx]')")
    # torchrun (started by the local_cwd scheduler) must come from this environment
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_installed_torchx_is_the_pinned_nightly() -> None:
    assert importlib.metadata.version("torchx-nightly") == TORCHX_PIN
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("torchx")  # the stable 0.x line must not shadow it
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["torchx"] == [f"torchx-nightly=={TORCHX_PIN}"]
    import kfp
    import urllib3

    # the reason for the pin: kfp 2.17 needs urllib3 2.x, which torchx 0.7.0 forbids
    assert kfp.__version__ == "2.17.0" and urllib3.__version__.startswith("2.")


def test_appdef_shape() -> None:
    from sam2_core.launch.torchx_app import train

    app = train("model=tiny", "trainer.max_steps=2", j="2x8", gpu=8, cpu=96, memMB=900_000)
    (role,) = app.roles
    assert role.image == image_ref(flavour="train")
    assert (role.num_replicas, role.min_replicas) == (2, 2)
    assert (role.resource.gpu, role.resource.cpu, role.resource.memMB) == (8, 96, 900_000)
    assert role.entrypoint == "bash" and role.args[0] == "-c"
    cmd = role.args[1]
    assert cmd.startswith("torchrun --nnodes=2 --nproc-per-node=8 ")
    assert "--no-python" in cmd and cmd.endswith("sam2kf train model=tiny trainer.max_steps=2")
    assert "${rank0_env}" in cmd  # multi-node: rendezvous on the first replica's host

    elastic = train(j="1:4x2").roles[0]
    assert (elastic.num_replicas, elastic.min_replicas) == (4, 1)
    assert "--nnodes=1:4" in elastic.args[1]
    assert "localhost:0" in train(j="1x2").roles[0].args[1]
    for bad, match in [({"j": "2x"}, "NODESxPROCS"), ({"j": "1x4", "gpu": 2}, "exceed")]:
        with pytest.raises(ValueError, match=match):
            train(**bad)


def _scheduler_request(stdout: str) -> dict[str, Any]:
    marker = "=== SCHEDULER REQUEST ==="
    assert marker in stdout, stdout[-2000:]
    doc: dict[str, Any] = yaml.safe_load(stdout.split(marker, 1)[1])
    return doc


def test_kubernetes_dryrun_prints_a_volcano_job(tmp_path: Path) -> None:
    proc = _torchx(
        [
            "run", "--dryrun", "-s", "kubernetes",
            "-cfg", "queue=default,namespace=ml,validate_spec=False",
            "--workspace", "",
            f"{COMPONENT}:train",
            "-j", "2x8", "--gpu", "8", "--cpu", "96", "--memMB", "900000",
            "--mounts", "type=volume,src=sam2kf-data,dst=/data",
            "--", "model=sam2.1_hiera_b+", "data.shards=/data/datasets/v1",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = _scheduler_request(proc.stdout)
    assert (job["apiVersion"], job["kind"]) == ("batch.volcano.sh/v1alpha1", "Job")
    assert job["spec"]["queue"] == "default" and job["spec"]["schedulerName"] == "volcano"
    tasks = job["spec"]["tasks"]
    assert len(tasks) == 2
    for task in tasks:
        (c,) = task["template"]["spec"]["containers"]
        assert c["image"] == image_ref(flavour="train")
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
        script = c["command"][2]
        assert "torchrun --nnodes=2 --nproc-per-node=8" in script
        assert script.endswith("sam2kf train model=sam2.1_hiera_b+ data.shards=/data/datasets/v1")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "/dev/shm" in mounts and "/data" in mounts
        volumes = {v["name"]: v for v in task["template"]["spec"]["volumes"]}
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "sam2kf-data"


PROBE = """
import sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
t = torch.ones(1)
dist.all_reduce(t)
print(f"PROBE rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():.0f} "
      f"args={' '.join(sys.argv[1:])}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.integration
def test_local_cwd_runs_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = _torchx(
        [
            "run", "-s", "local_cwd", f"{COMPONENT}:train", "-j", "1x2", "--image", "local",
            "--entry", f"{sys.executable} {script}", "--", "model=tiny", "trainer.max_steps=2",
        ],
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for rank in (0, 1):
        assert f"PROBE rank={rank} world=2 sum=2 args=model=tiny trainer.max_steps=2" in out, out[
            -3000:
        ]
    assert "SUCCEEDED" in out


def _train_available() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_core.cli", "train", "--help"], capture_output=True, text=True
    )
    return proc.returncode == 0 and "not implemented" not in proc.stdout + proc.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_local_cwd_runs_sam2kf_train_smoke(tmp_path: Path) -> None:
    if not _train_available():
        pytest.skip("sam2kf train is not implemented in this checkout yet")
    out_dir = tmp_path / "run"
    proc = _torchx(
        [
            "run", "-s", "local_cwd", f"{COMPONENT}:train", "-j", "1x2", "--image", "local",
            "--", "experiment=smoke", "trainer.max_steps=2", "trainer.device=cpu",
            f"trainer.output_dir={out_dir}",
        ],
        cwd=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (out_dir / "train_stats.jsonl").exists()
