"""Resume that knows its run: run.json in the output folder, refusals, ``trainer.resume=new``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam2_core.cli import main as cli_main
from sam2_core.train.config import ConfigError, load_train_config
from sam2_core.train.run_identity import (
    RUN_FILE,
    ResumeError,
    RunIdentity,
    hashed_config,
    read_identity,
)
from sam2_core.train.trainer import run_training

from .train_helpers import tiny_training_overrides


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)


def test_identity_ignores_resumable_keys_and_names_differences(tmp_path: Path) -> None:
    base = load_train_config(tiny_training_overrides(tmp_path / "a", 2))
    same = load_train_config(
        tiny_training_overrides(tmp_path / "b", 50, "trainer.log_every=5", "data.num_workers=3")
    )
    ident = RunIdentity.of(cfg=base)
    assert ident == RunIdentity.of(cfg=same)
    assert (ident.model, ident.experiment, ident.data) == ("tiny", "smoke", "synthetic")
    assert "trainer.max_steps" not in hashed_config(cfg=base)
    assert "optim.base_lr" in hashed_config(cfg=base)

    other = RunIdentity.of(
        cfg=load_train_config(tiny_training_overrides(tmp_path, 2, "optim.base_lr=0.002"))
    )
    assert other != ident
    # optim.lr.<group>.start follows base_lr: named after it
    assert ident.differences(other)[:2] == [
        "optim.base_lr 0.001 -> 0.002",
        "optim.lr.0.start 0.001 -> 0.002",
    ]
    raw = RunIdentity.of(cfg=load_train_config(["experiment=smoke", "data=raw", "data.raw=/d"]))
    assert "data synthetic -> raw /d" in ident.differences(raw)
    assert RunIdentity.from_json(json.loads(json.dumps(ident.to_json()))) == ident


def test_bad_resume_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer.resume='maybe'.*allowed values: auto, new"):
        load_train_config(tiny_training_overrides(tmp_path, 1, "trainer.resume=maybe"))


@pytest.mark.integration
def test_resume_checks_identity_and_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_training(load_train_config(tiny_training_overrides(out, 1)))
    assert first["step"] == 1 and first["resumed_from"] is None
    recorded = read_identity(output_dir=str(out))
    assert recorded is not None and recorded.model == "tiny" and recorded.experiment == "smoke"

    # Same run, nothing left to train: refused, naming the folder, the step and both ways out.
    with pytest.raises(ResumeError) as e:
        run_training(load_train_config(tiny_training_overrides(out, 1)))
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{out} already reached step 1 and trainer.max_steps=1" in msg
    assert "trainer.max_steps above 1" in msg and "trainer.resume=new" in msg

    # A different run in the same folder: refused, naming what differs.
    with pytest.raises(
        ResumeError, match=r"holds a different run \(optim.base_lr 0.001 -> 0.002; "
    ):
        run_training(load_train_config(tiny_training_overrides(out, 3, "optim.base_lr=0.002")))

    # The same run with more steps resumes.
    second = run_training(load_train_config(tiny_training_overrides(out, 2)))
    assert second["resumed_from"] == 1 and second["step"] == 2

    # trainer.resume=new replaces the other run: trained from step 0, new identity recorded.
    new = run_training(
        load_train_config(
            tiny_training_overrides(out, 1, "optim.base_lr=0.002", "trainer.resume=new")
        )
    )
    assert new["resumed_from"] is None and new["step"] == 1
    assert [
        json.loads(x)["step"] for x in (out / "train_stats.jsonl").read_text().splitlines()
    ] == [1]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]
    replaced = read_identity(output_dir=str(out))
    assert replaced is not None and replaced.config["optim.base_lr"] == 0.002

    # ... and a restart with the same arguments (e.g. a restarted pod) continues that run.
    again = run_training(
        load_train_config(
            tiny_training_overrides(out, 2, "optim.base_lr=0.002", "trainer.resume=new")
        )
    )
    assert again["resumed_from"] == 1 and again["step"] == 2


@pytest.mark.integration
def test_interrupted_final_export_and_older_folders_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_training(load_train_config(tiny_training_overrides(out, 1)))
    # Killed after the last checkpoint, before model_final.pt: the restart finishes the export.
    (out / "model_final.pt").unlink()
    (out / RUN_FILE).unlink()  # and a folder written before run identities existed
    done = run_training(load_train_config(tiny_training_overrides(out, 1)))
    assert done["resumed_from"] == 1 and done["step"] == 1
    assert (out / "model_final.pt").exists() and (out / RUN_FILE).exists()


@pytest.mark.integration
def test_cli_refusal_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli_main(["train", *tiny_training_overrides(out, 1)]) == 0
    capsys.readouterr()
    assert cli_main(["train", *tiny_training_overrides(out, 1)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [x for x in captured.err.splitlines() if x.startswith("sam2kf train:")]
    assert len(lines) == 1 and "already reached step 1" in lines[0]
    assert "Traceback" not in captured.err
