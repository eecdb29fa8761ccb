"""Multi-step trajectory parity with Meta's trainer (benchmarks/trajectory.py), short version.

Needs the reference environment of ``benchmarks/reference/setup_env.sh`` (sam2 1.1.0 from PyPI):
``$SAM2KF_REF_VENV`` or ``.venv-ref`` in the repository root; skipped when neither exists.
12 steps of the tiny model at 128 px (about 30 s on 2 cores): same parameter groups, same lr and
weight decay of every group at every step, loss terms within 1e-4 relative at every step, final
weights within 1e-4.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from sam2_core.model.build import load_model_config

ROOT = Path(__file__).resolve().parents[2]


def _ref_venv() -> Path:
    env = os.environ.get("SAM2KF_REF_VENV")
    venv = Path(env) if env else ROOT / ".venv-ref"
    if not (venv / "bin" / "python").exists() or not (venv / "src" / "sam2-1.1.0").is_dir():
        pytest.skip(
            f"no reference environment at {venv}: build it with "
            "`bash benchmarks/reference/setup_env.sh .venv-ref` (or set SAM2KF_REF_VENV)"
        )
    return venv


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("model", ["tiny", "sam2.1_hiera_t"])
def test_meta_size_overrides_describe_our_configs(model: str) -> None:
    """Meta's side is built from the MOSE config plus these overrides: they must give exactly
    the sizes of our config of the same name (later overrides win, as in Hydra)."""
    ref = _load(ROOT / "benchmarks" / "reference" / "meta_trajectory.py", "_meta_trajectory")
    got: dict[str, object] = {}
    for item in ref.SIZES[model]:
        key, value = item.lstrip("+").split("=", 1)
        got[key.removeprefix("trainer.model.")] = yaml.safe_load(value)
    cfg = load_model_config(model)
    for key, value in got.items():
        node: object = cfg
        for part in key.split("."):
            assert isinstance(node, dict), key
            node = node[part]
        assert (list(node) if isinstance(value, list) else node) == value, key  # type: ignore[call-overload]


@pytest.mark.slow
def test_trajectory_matches_meta(tmp_path: Path) -> None:
    venv = _ref_venv()
    out = tmp_path / "traj.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "trajectory.py"),
            "--reference",
            str(venv),
            "--steps",
            "12",
            "--json",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["groups"]["identical_membership"], rep["groups"]
    assert rep["schedules_max_rel"] <= 1e-15
    assert [s["decisions"]["use_pt_input"] for s in rep["per_step"]].count(True) >= 2
    assert rep["loss_max_rel"] <= 1e-4, res.stdout[-3000:]
    assert rep["params"]["total"]["rel"] <= 1e-4
    assert res.returncode == 0, res.stdout[-3000:]
