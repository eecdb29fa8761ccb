"""Training outputs on gs:// against a real GCS-API HTTP emulator (gcp-storage-emulator).

Checkpoints (marker written last, keep-last-K, incomplete and corrupt ones skipped), resume of a
restarted run, train_stats.jsonl, model_final.pt and mirrored TensorBoard event files, all with
``trainer.output_dir=gs://...``.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import torch

# tests/ is on sys.path (rootdir conftest without __init__.py): reuse the data tests' emulator.
from data.conftest import run_gcs_emulator

from sam2_core import storage
from sam2_core.tb_mirror import TensorBoardMirror
from sam2_core.train.checkpoint import CheckpointManager, CheckpointWarning

from .train_helpers import tiny_training_overrides


@pytest.fixture(scope="module")
def gcs() -> Iterator[str]:
    with run_gcs_emulator("sam2kf-train") as base:
        yield base


def _prefix(base: str) -> str:
    return f"{base}/{uuid.uuid4().hex[:10]}"


def _state(step: int) -> dict[str, Any]:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def test_checkpoint_manager_on_gcs(gcs: str, published_writes: list[str]) -> None:
    root = _prefix(gcs) + "/checkpoints"
    mgr = CheckpointManager(root, keep_last=2)
    order = published_writes
    for s in (1, 2, 3):
        mgr.save(s, _state(s))
    # every directory: state.pt published first, the marker last
    assert [u.rsplit("/", 2)[-2:] for u in order] == [
        [f"step-00000{s}", name] for s in (1, 2, 3) for name in ("state.pt", "_COMPLETE")
    ]
    assert [s for s, _ in mgr.step_dirs()] == [3, 2]  # keep-last-2 on the object store
    fs, path = storage.get_fs(root)
    assert not fs.exists(f"{path}/step-000001/state.pt")

    # A newer directory whose marker never arrived (crash between the two uploads) is ignored,
    # even though its state.pt is loadable, and removed by the next prune.
    storage.write_bytes_atomic(
        storage.join(root, "step-000009", "state.pt"), storage.read_bytes(order[-2])
    )
    found = mgr.load_latest()
    assert found is not None and found[0] == 3 and float(found[1]["model"]["w"][0]) == 3.0

    # A corrupt newest checkpoint (marker present) falls back to the previous one with a warning.
    storage.write_bytes_atomic(storage.join(root, "step-000003", "state.pt"), b"\x00garbage" * 10)
    with pytest.warns(CheckpointWarning, match="step-000003"):
        found = mgr.load_latest()
    assert found is not None and found[0] == 2

    mgr.prune()
    assert [s for s, _ in mgr.step_dirs()] == [3, 2]
    # "best" is replaced whole: old marker gone before the new state, new marker last
    mgr.save_best(2, _state(2), {"J&F": 1.0})
    mgr.save_best(3, _state(3), {"J&F": 2.0})
    assert storage.read_json(storage.join(root, "best", "_COMPLETE"))["step"] == 3


def test_tensorboard_mirror_uploads_changed_files(gcs: str) -> None:
    url = _prefix(gcs) + "/tensorboard"
    tb = TensorBoardMirror(url, interval_s=3600)
    assert tb.remote and not tb.due()
    with open(f"{tb.log_dir}/events.out.tfevents.1", "wb") as f:
        f.write(b"a" * 10)
    assert tb.sync() == 1 and tb.sync() == 0  # unchanged files are not uploaded again
    with open(f"{tb.log_dir}/events.out.tfevents.1", "ab") as f:
        f.write(b"b" * 5)
    tb.close()
    assert storage.read_bytes(storage.join(url, "events.out.tfevents.1")) == b"a" * 10 + b"b" * 5
    assert not os.path.exists(tb.log_dir)


@pytest.mark.integration
def test_training_outputs_and_resume_on_gcs(gcs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sam2_core.model.build import build_model, load_checkpoint
    from sam2_core.train.config import load_train_config
    from sam2_core.train.trainer import run_training

    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    out = _prefix(gcs) + "/run"
    ckpt = storage.join(out, "checkpoints")
    tb_url = storage.join(out, "tensorboard")

    first = run_training(load_train_config(tiny_training_overrides(out, 1)))
    assert first["step"] == 1 and first["resumed_from"] is None
    assert storage.listdir(ckpt) == ["step-000001"] and storage.is_complete(
        storage.join(ckpt, "step-000001")
    )
    assert len(storage.listdir(tb_url)) == 1

    # A newer step directory whose marker never arrived (upload cut off): never resumed from.
    state_pt = storage.read_bytes(storage.join(ckpt, "step-000001", "state.pt"))
    storage.write_bytes_atomic(storage.join(ckpt, "step-000007", "state.pt"), state_pt)

    second = run_training(load_train_config(tiny_training_overrides(out, 2)))
    assert second["resumed_from"] == 1 and second["step"] == 2
    # keep-last-1: step 1 pruned, the leftover without marker cleaned up
    assert storage.listdir(ckpt) == ["step-000002"] and storage.is_complete(
        storage.join(ckpt, "step-000002")
    )
    lines = storage.read_text(storage.join(out, "train_stats.jsonl")).splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]

    final = storage.join(out, "model_final.pt")
    load_checkpoint(build_model("tiny", overrides={"image_size": 64}), final)
    sd = torch.load(io.BytesIO(storage.read_bytes(final)), weights_only=True)
    assert set(sd) == {"model"} and len(sd["model"]) == 371

    # One event file per run, each readable straight from gs:// (tensorboard's fsspec layer).
    names = storage.listdir(tb_url)
    assert len(names) == 2 and all(n.startswith("events.out.tfevents.") for n in names)
    steps: set[int] = set()
    for name in names:
        acc = EventAccumulator(storage.join(tb_url, name))
        acc.Reload()
        steps |= {e.step for e in acc.Scalars("losses/core_loss")}
    assert steps == {1, 2}
