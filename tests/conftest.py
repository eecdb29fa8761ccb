"""Shared test fixtures: the ``../shared`` reference folder, GPU skipping, tiny temp data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# gcsfs probes bucket types over gRPC before anything else; against the HTTP emulator that
# stalls 60 s per call. Must be set before gcsfs is imported anywhere.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` next to the repository, or ``$SAM2KF_SHARED`` (CI sets it for clean clones)."""
    env = os.environ.get("SAM2KF_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_dir()
    if not d.is_dir():
        pytest.skip(f"reference folder {d} is absent (set SAM2KF_SHARED)")
    return d


@pytest.fixture(scope="session")
def golden(shared: Path) -> Path:
    d = shared / "golden"
    if not d.is_dir():
        pytest.skip(f"golden reference {d} is absent")
    return d


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
