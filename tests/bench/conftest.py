"""Fixtures of the benchmark tests: loading a benchmark script as a module, and the reference
environment of ``benchmarks/reference/setup_env.sh`` (Meta's sam2 1.1.0) where one exists."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(relpath: str) -> ModuleType:
    path = ROOT / relpath
    if str(path.parent) not in sys.path:  # as when run: the script's folder is sys.path[0]
        sys.path.insert(0, str(path.parent))
    name = "_bench_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """Loads a script by its path from the repository root (``benchmarks/train_step.py``): the
    benchmarks are scripts, not a package."""
    return _load


@pytest.fixture
def ref_venv() -> Path | None:
    """``$SAM2KF_REF_VENV`` or ``.venv-ref`` in the repository root, when it holds the reference
    environment (its python and the sam2 1.1.0 sources); None otherwise."""
    env = os.environ.get("SAM2KF_REF_VENV")
    venv = Path(env) if env else ROOT / ".venv-ref"
    if (venv / "bin" / "python").exists() and (venv / "src" / "sam2-1.1.0").is_dir():
        return venv
    return None
