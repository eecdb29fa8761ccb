"""The pipeline's train step on an empty registry starts from Meta's released weights of its size.

The released file is served by a loopback HTTP server (a stand-in for Meta's download host);
the engine is a recording one, so the test sees exactly the ``sam2kf train`` arguments the
training pods would get.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sam2_core import storage, workflow
from sam2_core.launch.spec import JobRun, LaunchSpec
from sam2_core.model import released

PAYLOAD = b"not really a checkpoint, only bytes to fetch" * 100


@dataclass
class Artifact:
    uri: str
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordingEngine:
    runs: list[JobRun] = field(default_factory=list)

    def run(self, spec: LaunchSpec, run: JobRun) -> Any:
        self.runs.append(run)
        out = next(
            a.split("=", 1)[1] for a in run.train_args if a.startswith("trainer.output_dir=")
        )
        storage.write_bytes_atomic(storage.join(out, "model_final.pt"), b"trained")
        return None


@pytest.fixture()
def mirror(
    tmp_path: Path, file_server: Callable[[Path], tuple[str, list[str]]]
) -> tuple[str, list[str]]:
    """An HTTP server with ``sam2.1_hiera_tiny.pt``; its URL and the paths requested."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "sam2.1_hiera_tiny.pt").write_bytes(PAYLOAD)
    return file_server(tmp_path)


def test_empty_registry_starts_from_released_weights(
    tmp_path: Path,
    mirror: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, requested = mirror
    url = f"{base}/ckpts"
    monkeypatch.setenv(released.MIRROR_ENV, url)
    monkeypatch.delenv(released.CACHE_ENV, raising=False)
    engine = RecordingEngine()
    model = Artifact(uri=str(tmp_path / "model"), path=str(tmp_path / "model"))
    shards = Artifact(uri=str(tmp_path / "shards"), path=str(tmp_path / "shards"))
    kwargs: dict[str, Any] = {
        "shards": shards,
        "run_id": "r1",
        "launch": LaunchSpec(engine="local"),
        "model_name": "sam2.1_hiera_t",
        "init_checkpoint": workflow.CHAMPION,
        "registry_uri": str(tmp_path / "registry"),
        "storage_root": str(tmp_path / "store"),
        "engine": engine,
    }
    workflow.launch_training(model=model, **kwargs)

    log = capsys.readouterr().out
    assert "no champion in the registry yet: starting from Meta's released sam2.1_hiera_tiny" in log
    cached = tmp_path / "store" / "cache" / "checkpoints" / "sam2.1_hiera_tiny.pt"
    assert cached.read_bytes() == PAYLOAD
    assert f"model.checkpoint={cached}" in engine.runs[0].train_args
    assert model.metadata["init_checkpoint"] == "sam2.1_hiera_tiny"
    assert len(model.metadata["init_checkpoint_sha256"]) == 64

    # A second run of the same pipeline reuses the cached copy: no request reaches the server.
    before = len(requested)
    model2 = Artifact(uri=str(tmp_path / "model2"), path=str(tmp_path / "model2"))
    workflow.launch_training(model=model2, **{**kwargs, "run_id": "r2"})
    assert len(requested) == before
    assert os.path.getsize(cached) == len(PAYLOAD)


def test_a_model_without_released_weights_starts_from_initial_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = workflow.resolve_checkpoint(
        workflow.CHAMPION, str(tmp_path / "registry"), model_name="tiny"
    )
    assert got == ""
    assert "starting from the model's initial weights" in capsys.readouterr().out


def test_bad_overrides_fail_before_any_job_starts(tmp_path: Path) -> None:
    engine = RecordingEngine()
    model = Artifact(uri=str(tmp_path / "model"), path=str(tmp_path / "model"))
    shards = Artifact(uri=str(tmp_path / "shards"), path=str(tmp_path / "shards"))
    spec = LaunchSpec(engine="local", overrides=["++model.image_encoder._target_=builtins.open"])
    with pytest.raises(ValueError, match=r"builtins\.open"):
        workflow.launch_training(
            shards=shards, model=model, run_id="r1", launch=spec, model_name="tiny", engine=engine
        )
    assert engine.runs == []
