"""The whole pipeline through kfp.local (SubprocessRunner) on a small demo set, three runs:

1. first run: extract -> shard -> 2-process torchrun training -> evaluate -> promote (first wins);
2. more videos arrive: only the new ones are extracted/sharded, training warm-starts from the
   champion, champion and challenger are evaluated on the same (new) split;
3. nothing new: the pipeline stops after the extract (and commit) step.
"""

import json
from pathlib import Path

import pytest

from pipelines.local_run import LocalRunConfig, describe, run_local
from sam2_core.registry import Registry

pytestmark = pytest.mark.integration


def _cfg(out: Path, videos: int) -> LocalRunConfig:
    # Demo ids hash into "val" at val_fraction 0.34: demo_002 (run 1) and demo_005 (run 2).
    return LocalRunConfig(
        out=str(out), demo_videos=videos, demo_frames=16, max_steps=4, val_fraction=0.34
    )


def test_local_pipeline_three_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = run_local(_cfg(tmp_path, 3))
    # Quiet by default: one line per step (6 steps), no executor JSON.
    shown = capsys.readouterr().out.splitlines()
    assert 1 <= len(shown) <= 10 and all(line.startswith("[") for line in shown), shown
    assert not any("executor_input" in line or "KFP Executor" in line for line in shown)
    a = first.artifacts
    model_dir = Path(a["train-model/model"]["url"])
    assert (model_dir / "model_final.pt").is_file()
    assert any((model_dir / "checkpoints").iterdir())
    assert any((model_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert (Path(a["commit-shards/shards"]["url"]) / "manifest.json").is_file()
    assert (
        Path(a["evaluate-challenger/report"]["url"])
        .read_text()
        .lstrip()
        .lower()
        .startswith("<!doctype html")
    )
    assert (Path(a["evaluate-challenger/results"]["url"]) / "summary.json").is_file()
    jf = a["evaluate-challenger/metrics"]["metadata"]["J&F"]
    assert 0.0 <= jf <= 100.0
    assert a["evaluate-champion/metrics"]["metadata"]["J&F"] == -1.0
    assert first.champion is not None and first.champion["jf"] == pytest.approx(jf)
    text = describe(first)
    assert "HTML report" in text and "champion now" in text
    assert "results/report.html" in text  # the real file, not the extensionless artifact

    second = run_local(_cfg(tmp_path, 6))
    reg = Registry(str(tmp_path / "registry"))
    versions = reg.dataset_versions("demo")
    assert sorted(len(v["video_ids"]) for v in versions.values()) == [3, 3]
    assert reg.seen_videos("demo") == {f"demo_{i:03d}" for i in range(6)}
    frames = Path(second.artifacts["extract-frames/frames"]["url"])
    assert sorted(p.name for p in (frames / "JPEGImages_24fps").iterdir()) == [
        "demo_003",
        "demo_004",
        "demo_005",
    ]
    champ_eval = second.artifacts["evaluate-champion/metrics"]["metadata"]
    assert champ_eval["J&F"] >= 0.0 and champ_eval["model_uri"] == first.champion["model_uri"]
    events = [h["event"] for h in reg.history()]
    assert len(events) == 2 and events[0] == "promoted"
    decision = json.loads(Path(second.artifacts["promote-model/decision"]["url"]).read_text())
    assert decision["champion_jf"] == pytest.approx(champ_eval["J&F"])

    third = run_local(_cfg(tmp_path, 6))
    assert third.parameters["extract-frames"]["Output"] == 0
    assert third.parameters["commit-shards"]["Output"] == 0
    assert "train-model/model" not in third.artifacts
    assert "stopped after extract" in describe(third)
