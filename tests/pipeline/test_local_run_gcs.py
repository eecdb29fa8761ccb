"""The whole local pipeline (kfp.local) with every durable output on gs:// (GCS emulator).

Raw videos, registry and ``storage_root`` (frames, shards, training run) live on a real GCS-API
HTTP emulator; kfp.local's component subprocesses and the torchrun training process inherit
``STORAGE_EMULATOR_HOST``. Only kfp.local's own pipeline root stays local (it must).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is on sys.path (rootdir conftest without __init__.py): reuse the data tests' emulator.
from data.conftest import run_gcs_emulator

from pipelines.local_run import LocalRunConfig, describe, run_local
from sam2_core import storage
from sam2_core.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs() -> Iterator[str]:
    with run_gcs_emulator("sam2kf-pipeline") as base:
        yield f"{base}/{uuid.uuid4().hex[:8]}"


def test_local_pipeline_with_storage_on_gcs(gcs: str, tmp_path: Path) -> None:
    from sam2_core.data.prep.demo import write_demo_dataset
    from sam2_core.model.build import build_model, load_checkpoint

    raw, registry, root = f"{gcs}/raw", f"{gcs}/registry", f"{gcs}/store"
    with tempfile.TemporaryDirectory() as d:
        write_demo_dataset(dst=d, num_videos=2, num_frames=16)
        storage.upload_dir(d, raw)
    # At val_fraction 0.7 demo_001 hashes into "val" and demo_000 into "train".
    cfg = LocalRunConfig(
        out=str(tmp_path / "local"),
        raw_uri=raw,
        registry_uri=registry,
        max_steps=2,
        nproc_per_node=1,
        val_fraction=0.7,
        eval_max_videos=1,
        extra={"storage_root": root},
    )
    result = run_local(cfg)
    a = result.artifacts

    frames = a["extract-frames/frames"]["url"]
    assert frames.startswith(root + "/")
    assert storage.listdir(storage.join(frames, "JPEGImages_24fps")) == ["demo_000", "demo_001"]
    shards = a["shard-dataset/shards"]["url"]
    assert shards.startswith(root + "/") and storage.exists(storage.join(shards, "manifest.json"))

    model_dir = a["train-model/model"]["url"]
    assert model_dir.startswith(root + "/runs/")
    ckpts = storage.join(model_dir, "checkpoints")
    steps = [n for n in storage.listdir(ckpts) if n.startswith("step-")]
    assert steps and all(storage.is_complete(storage.join(ckpts, n)) for n in steps)
    events = storage.listdir(storage.join(model_dir, "tensorboard"))
    assert any(n.startswith("events.out.tfevents.") for n in events)
    assert storage.read_text(storage.join(model_dir, "train_stats.jsonl")).strip()
    final = storage.join(model_dir, "model_final.pt")
    load_checkpoint(build_model("tiny"), final)

    jf = a["evaluate-challenger/metrics"]["metadata"]["J&F"]
    assert 0.0 <= jf <= 100.0
    champ = Registry(registry).champion()
    assert champ is not None and champ.model_uri == final
    assert result.champion is not None and result.champion["jf"] == pytest.approx(jf)
    assert "champion now" in describe(result)
