"""The same-machine baselines of benchmarks/train_step.py and benchmarks/trajectory.py (Meta's own
SAM2Train, run in the environment of benchmarks/reference/setup_env.sh): their model overrides
(benchmarks/reference/meta_common.py) must describe our configs exactly, and a missing
environment is reported, not crashed on. Running Meta's code itself needs that separate
environment and is not part of the fast tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from sam2_core.model.build import load_model_config


@pytest.mark.parametrize("model", ["tiny", "sam2.1_hiera_t"])
def test_meta_size_overrides_describe_our_configs(
    model: str, load_script: Callable[[str], ModuleType]
) -> None:
    """Meta's side is built from the MOSE config plus these overrides: they must give exactly
    the sizes of our config of the same name (later overrides win, as in Hydra)."""
    ref = load_script("benchmarks/reference/meta_common.py")
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


def test_missing_reference_environment_is_reported(
    tmp_path: Path, load_script: Callable[[str], ModuleType]
) -> None:
    bench = load_script("benchmarks/train_step.py")
    out = bench.run_reference(str(tmp_path / "nope"), str(tmp_path / "b.pt"), 1, 1)
    assert "error" in out and "setup_env.sh" in out["error"]
