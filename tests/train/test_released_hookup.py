"""Released checkpoint names through `sam2kf train`, `evaluate` and `export`, offline.

A tiny model's weights stand in for Meta's files: they are saved as ``sam2.1_hiera_tiny.pt``
(and a SAM 2.0-flavoured ``sam2_hiera_tiny.pt``) in a mirror folder, which is either used in
place (``SAM2KF_CHECKPOINT_MIRROR=<folder>``) or served by a loopback HTTP server
(``SAM2KF_CHECKPOINT_MIRROR=http://127.0.0.1:<port>``, downloaded into the cache). The two
released entries are re-pointed at the ``tiny`` config for the test, so that one training step
runs in seconds; every name lookup, download, cache and strict load is the real code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sam2_core.cli import main
from sam2_core.model import released
from sam2_core.model.build import build_model, export_checkpoint
from sam2_core.model.released import CACHE_ENV, MIRROR_ENV, RELEASED, SAM2_0_OVERRIDES
from sam2_core.train.config import load_train_config

TINY_21 = "sam2.1_hiera_tiny"
TINY_20 = "sam2_hiera_tiny"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with fake released files: tiny-model weights under Meta's file names."""
    folder = tmp_path_factory.mktemp("mirror")
    export_checkpoint(build_model("tiny", init_seed=7), str(folder / f"{TINY_21}.pt"))
    sam2_0 = build_model("tiny", init_seed=8, overrides=list(SAM2_0_OVERRIDES))
    export_checkpoint(sam2_0, str(folder / f"{TINY_20}.pt"))
    return folder


@pytest.fixture(autouse=True)
def tiny_releases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the two tiny released names at the ``tiny`` config; a private, empty cache."""
    for name in (TINY_21, TINY_20):
        monkeypatch.setitem(RELEASED, name, dataclasses.replace(RELEASED[name], model="tiny"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)


@pytest.fixture
def http_mirror(
    mirror: Path, file_server: Callable[[Path], tuple[str, list[str]]]
) -> tuple[str, list[str]]:
    """``(base URL, paths requested)`` of a loopback server over the mirror folder."""
    return file_server(mirror)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert isinstance(sd, dict)
    return sd


def _train_args(out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "experiment=smoke",
        "data=synthetic",
        f"trainer.output_dir={out}",
        "trainer.max_steps=1",
        "trainer.progress=false",
        *extra,
    ]


# ----------------------------------------------------------------------------------- configs
def test_finetune_experiments_default_to_the_released_weights() -> None:
    mose = load_train_config(["experiment=mose_finetune", "data.raw=/data/mose"])
    sav = load_train_config(["experiment=sav_finetune", "data.shards=gs://b/sav"])
    assert mose.checkpoint == sav.checkpoint == "released"
    assert load_train_config(["experiment=smoke"]).checkpoint is None


def test_train_refuses_a_bad_released_name_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bad"
    assert main(_train_args(out, "model.checkpoint=sam2.1_hiera_huge")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.checkpoint" in err and "sam2.1_hiera_base_plus" in err
    # a released file of another size: named with the model to choose instead
    assert main(_train_args(out, "model=sam2.1_hiera_s", "model.checkpoint=sam2.1_hiera_large"))
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sam2.1_hiera_l" in err and "sam2.1_hiera_small" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------- train
def test_train_released_resolves_through_a_mirror_folder(
    mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    # The image encoder is frozen, so the final model still holds the mirror file's encoder.
    rc = main(_train_args(out, "model.checkpoint=released", "optim.freeze=[image_encoder.*]"))
    assert rc == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
    said = [r.getMessage() for r in caplog.records if "initial weights" in r.getMessage()]
    assert len(said) == 1 and f"released checkpoint {TINY_21}" in said[0]
    assert "pre-staged mirror copy" in said[0] and str(mirror) in said[0]
    start, final = _weights(mirror / f"{TINY_21}.pt"), _weights(out / "model_final.pt")
    encoder = [k for k in start if k.startswith("image_encoder.")]
    assert encoder and all(torch.equal(start[k], final[k]) for k in encoder)
    assert not (tmp_path / "cache").exists()  # used in place: nothing copied


def test_train_sam2_0_name_gets_its_architecture_flags(
    mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A SAM 2.0 file loads strictly only with its four flags, which the name brings along."""
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    rc = main(
        ["train", "--dry-run", *_train_args(tmp_path / "r", f"model.checkpoint={TINY_20}")[1:]]
    )
    assert rc == 0, capsys.readouterr().err
    from sam2_core.model.build import CheckpointError

    with pytest.raises(CheckpointError, match="does not match the model"):
        build_model("tiny", checkpoint=str(mirror / f"{TINY_20}.pt"))


# ------------------------------------------------------------------------- evaluate / export
def test_export_and_evaluate_download_once_from_a_loopback_mirror(
    mirror: Path,
    http_mirror: tuple[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, seen = http_mirror
    monkeypatch.setenv(MIRROR_ENV, base)
    out = tmp_path / "copy.pt"
    rc = main(["export", "--model", "tiny", "--checkpoint", "released", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert seen == [f"/{TINY_21}.pt"]
    cached = tmp_path / "cache" / f"{TINY_21}.pt"
    assert cached.read_bytes() == (mirror / f"{TINY_21}.pt").read_bytes()
    assert (tmp_path / "cache" / f"{TINY_21}.pt.sha256").exists()
    want = _weights(mirror / f"{TINY_21}.pt")
    got = _weights(out)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    from sam2_core.data.prep.demo import write_demo_dataset

    data = tmp_path / "demo"
    write_demo_dataset(dst=str(data), num_videos=1, num_frames=6)
    ev = tmp_path / "ev"
    args = ["evaluate", "--model", "tiny", "--checkpoint", TINY_21, "--data", str(data)]
    rc = main([*args, "--out", str(ev), "--device", "cpu", "--quiet", "--no-report"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [f"/{TINY_21}.pt"]  # the cache was reused: no second transfer
    assert json.loads((ev / "summary.json").read_text())["num_videos"] == 1

    # `--model <released name>`: the name alone picks the config and the weights
    from sam2_core.eval.vos import load_model

    net = load_model(TINY_21, device="cpu")
    assert all(torch.equal(v, want[k]) for k, v in net.state_dict().items())


def test_missing_mirror_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(empty))
    rc = main(["export", "--model", "tiny", "--checkpoint", TINY_21, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and MIRROR_ENV in err and str(empty) in err
    assert not (tmp_path / "o").exists()
    assert released.lookup("released", model="tiny") is RELEASED[TINY_21]
