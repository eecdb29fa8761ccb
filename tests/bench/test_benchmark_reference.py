"""The same-machine baseline of benchmarks/train_step.py (Meta's own SAM2Train, run in the
environment of benchmarks/reference/setup_env.sh): its model overrides must describe hiera_t
exactly as our config does, and a missing environment is reported, not crashed on. Running
Meta's code itself needs that separate environment and is not part of the test suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

from sam2_core.model.build import load_model_config

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_reference_overrides_are_hiera_t() -> None:
    ref = _load(ROOT / "benchmarks" / "reference" / "meta_train_step.py", "_meta_train_step")
    got: dict[str, object] = {}
    for item in ref.HIERA_T:
        key, value = item.lstrip("+").split("=", 1)
        got[key.removeprefix("trainer.model.")] = yaml.safe_load(value)
    cfg = load_model_config("sam2.1_hiera_t")
    for key, value in got.items():
        node: object = cfg
        for part in key.split("."):
            assert isinstance(node, dict)
            node = node[part]
        assert list(node) == value if isinstance(value, list) else node == value, key  # type: ignore[call-overload]


def test_missing_reference_environment_is_reported(tmp_path: Path) -> None:
    bench = _load(ROOT / "benchmarks" / "train_step.py", "_train_step_bench")
    out = bench.run_reference(str(tmp_path / "nope"), str(tmp_path / "b.pt"), 1, 1)
    assert "error" in out and "setup_env.sh" in out["error"]
