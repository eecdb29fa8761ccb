"""No code from data: a config or override may only name the model's own module classes.

The attack of issue 16: an override turns a model node into ``{_target_: builtins.open, file:
<victim>, mode: w}``, and Hydra's ``instantiate`` truncates the file. Each test first shows that
the node really would truncate a decoy (so the refusal is what protects the victim), then that
``build_model`` and ``sam2kf train`` refuse it with one line and leave the victim untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sam2_core.cli import main
from sam2_core.model.build import (
    ALLOWED_TARGETS,
    CONFIG_DIR,
    MODEL_NAMES,
    DisallowedTarget,
    build_model,
    check_targets,
    load_model_config,
)

CONTENT = "precious\n"


def _victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    path = tmp_path / name
    path.write_text(CONTENT)
    return path


def _attack(path: Path) -> dict[str, Any]:
    return {"_target_": "builtins.open", "file": str(path), "mode": "w"}


def test_the_attack_is_real_without_the_allowlist(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    decoy = _victim(tmp_path, "decoy.txt")
    instantiate(_attack(decoy)).close()
    assert decoy.read_text() == ""  # truncated: this is what the allowlist prevents


def test_build_model_refuses_a_foreign_target_before_instantiating(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    with pytest.raises(DisallowedTarget) as exc:
        build_model("tiny", overrides={"image_encoder": _attack(victim)})
    msg = str(exc.value)
    assert "\n" not in msg and "model.image_encoder._target_=builtins.open" in msg
    assert victim.read_text() == CONTENT
    # the dotlist form of the issue, nested deeper and in a list
    with pytest.raises(DisallowedTarget, match=r"model\.image_encoder\._target_=builtins\.open"):
        build_model("tiny", overrides=["image_encoder._target_=builtins.open"])
    with pytest.raises(DisallowedTarget, match=r"model\.memory_attention\.layer\._target_=os\.sys"):
        build_model("tiny", overrides=["memory_attention.layer._target_=os.sys"], device="meta")


def test_own_functions_are_refused_too(tmp_path: Path) -> None:
    """An exact list of classes, not a prefix: our own writer functions stay out."""
    node = {"_target_": "sam2_core.model.build.export_checkpoint", "url": str(tmp_path / "x")}
    with pytest.raises(DisallowedTarget, match="export_checkpoint is not allowed"):
        check_targets({"neck": [node]}, path="model")
    assert not (tmp_path / "x").exists()
    with pytest.raises(DisallowedTarget, match=r"model\.a\.0\._target_=\{"):
        check_targets({"a": [{"_target_": {"nested": 1}}]})


def test_every_packaged_and_official_config_passes(tmp_path: Path) -> None:
    for name in MODEL_NAMES:
        check_targets(load_model_config(name))
    golden = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "tiny" / "config.yaml"
    if golden.is_file():  # Meta's own YAML: its sam2.* targets are mapped onto ours
        check_targets(load_model_config(str(golden)))
    assert all(t.startswith("sam2_core.model.") for t in ALLOWED_TARGETS)
    assert (CONFIG_DIR / "tiny.yaml").is_file()


def test_sam2kf_train_refuses_the_override_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "run"
    base = ["train", "experiment=smoke", "data=synthetic", f"trainer.output_dir={out}"]
    attacks = [
        ["model.image_encoder._target_=builtins.open"],
        [
            "++model.image_encoder={_target_:builtins.open,file:" + str(victim) + ",mode:w}",
        ],
        ["+data.extra.x={_target_:builtins.exec,_args_:['print(1)']}"],
    ]
    for extra in attacks:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "_target_=builtins." in err and "not allowed" in err, err
    assert victim.read_text() == CONTENT
    assert not out.exists()  # refused before any work
