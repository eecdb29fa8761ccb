"""`sam2kf train experiment=smoke` end to end (demo data, tiny model, CPU) + config handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam2_core.cli import main
from sam2_core.train.config import ConfigError, load_train_config


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.mark.integration
def test_smoke_experiment(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    cmd = [
        sys.executable,
        "-m",
        "sam2_core.cli",
        "train",
        "experiment=smoke",
        f"trainer.output_dir={out}",
        "trainer.max_steps=2",
        "trainer.ckpt_every=1",
        "trainer.keep_last=1",
        "trainer.log_every=1",
        "trainer.image_every=1",
        "data.demo_num_videos=2",
        "data.demo_num_frames=12",
    ]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-000002"]
    assert (out / "checkpoints" / "step-000002" / "_COMPLETE").exists()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    sd = torch.load(out / "model_final.pt", weights_only=True)
    assert set(sd) == {"model"} and len(sd["model"]) == 371
    stats = [json.loads(x) for x in (out / "train_stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2]
    for key in ("core_loss", "loss_mask", "loss_dice", "loss_iou", "loss_class", "frames_per_s"):
        assert key in stats[-1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert "losses/core_loss" in tags["scalars"] and "perf/frames_per_s" in tags["scalars"]
    assert any(t.startswith("lr/") for t in tags["scalars"])
    assert "masks/image_gt_pred" in tags["images"]


def test_dry_run_builds_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "train",
            "--dry-run",
            "experiment=smoke",
            "data=synthetic",
            f"trainer.output_dir={tmp_path / 'dry'}",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dry_run"] and summary["params"] == 1_701_906 and summary["param_groups"] > 10
    assert not (tmp_path / "dry" / "model_final.pt").exists()


def test_bad_overrides_name_key_and_allowed_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.device.*auto, cpu, cuda"):
        load_train_config(["trainer.device=gpu"])
    with pytest.raises(ConfigError, match=r"(?s)model/foo.*sam2\.1_hiera_t.*tiny"):
        load_train_config(["model=foo"])
    with pytest.raises(ConfigError, match=r"(?s)trainer\.max_stepz.*allowed keys.*max_steps"):
        load_train_config(["trainer.max_stepz=3"])
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        load_train_config(["trainer.max_steps=abc"])
    assert main(["train", "--dry-run", "experiment=nope"]) == 2
    assert "smoke" in capsys.readouterr().err


def test_experiments_compose() -> None:
    mose = load_train_config(["experiment=mose_finetune", "data.raw=/data/mose"])
    assert mose.model_name == "sam2.1_hiera_b+"
    assert mose.model["image_encoder"]["trunk"]["drop_path_rate"] == 0.1
    assert (mose.data.num_frames, mose.data.max_num_objects, mose.data.resolution) == (8, 3, 1024)
    assert mose.optim.lr[0].start == 5e-6 and mose.optim.grad_clip == 0.1
    assert mose.prompts.prob_to_use_pt_input_for_train == 0.5
    sav = load_train_config(
        ["experiment=sav_finetune", "data.shards=gs://b/sav", "model=sam2.1_hiera_t"]
    )
    assert sav.model_name == "sam2.1_hiera_t" and sav.data.shards == "gs://b/sav"
    over = load_train_config(["experiment=smoke", "optim.base_lr=0.01", "model.checkpoint=/x.pt"])
    assert over.optim.lr[0].start == 0.01 and over.checkpoint == "/x.pt"


def test_cpu_bf16_autocast_option(tmp_path: Path) -> None:
    """``trainer.cpu_amp=true`` trains under bf16 autocast on CPU (finite losses, fp32 weights);
    float16 on CPU is refused with the key named."""
    from sam2_core.train.trainer import run_training

    cfg = load_train_config(
        [
            "experiment=smoke",
            "data=synthetic",
            f"trainer.output_dir={tmp_path / 'amp'}",
            "trainer.max_steps=2",
            "trainer.cpu_amp=true",
            "trainer.progress=false",
            "trainer.val_every=0",
        ]
    )
    summary = run_training(cfg)
    assert summary["step"] == 2
    stats = [
        json.loads(x) for x in (tmp_path / "amp" / "train_stats.jsonl").read_text().splitlines()
    ]
    assert all(torch.isfinite(torch.tensor(s["core_loss"])) for s in stats)
    sd = torch.load(tmp_path / "amp" / "model_final.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())
    with pytest.raises(ConfigError, match=r"trainer\.cpu_amp.*amp_dtype=bfloat16"):
        load_train_config(["trainer.cpu_amp=true", "trainer.amp_dtype=float16"])
