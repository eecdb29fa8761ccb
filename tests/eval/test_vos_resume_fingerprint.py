"""Evaluate resumes only what the same weights and settings produced (issue 16, item 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.eval.fingerprint import weights_sha256
from sam2_core.eval.vos import ResumeMismatchError, evaluate_model, resume_mode

from .test_vos import GTPredictor


class WeightPredictor(GTPredictor):
    """GT logits when the model's weight is positive, the inverted GT when it is negative:
    two models give clearly different predictions and scores."""

    def propagate_in_video(self, state: dict[str, Any], *, start_frame_idx: int | None = None):
        sign = 1.0 if float(self.model.weight.sum()) > 0 else -1.0
        for pos, ids, masks in super().propagate_in_video(state, start_frame_idx=start_frame_idx):
            yield pos, ids, masks * sign


def _model(w: float) -> nn.Linear:
    m = nn.Linear(1, 1)
    with torch.no_grad():
        m.weight.fill_(w)
        m.bias.zero_()
    return m


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("demo")
    write_demo_dataset(dst=str(d), num_videos=2, num_frames=12, sizes=[(48, 64), (40, 72)])
    return str(d)


def _run(demo: str, out: Path, model: nn.Module, **kw: Any) -> dict[str, Any]:
    return evaluate_model(
        model=model,
        data=demo,
        out=str(out),
        predictor_cls=WeightPredictor,
        report=False,
        progress=False,
        **kw,
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_model_b_into_a_folder_of_model_a_equals_a_fresh_run_of_b(
    demo: str, tmp_path: Path
) -> None:
    a, b = _model(1.0), _model(-1.0)
    d = tmp_path / "D"
    first = _run(demo, d, a)
    GTPredictor.calls.clear()
    second = _run(demo, d, b)
    assert sorted(GTPredictor.calls) == ["demo_000", "demo_001"], "B must not reuse A's videos"
    fresh = _run(demo, tmp_path / "fresh", b)
    assert first["J&F"] != fresh["J&F"]
    for key in ("J&F", "J", "F", "num_videos", "num_objects", "per_object", "fingerprint"):
        assert second[key] == fresh[key], key
    assert second["videos_redone"] == ["demo_000", "demo_001"]
    assert _tree(d / "predictions") == _tree(tmp_path / "fresh" / "predictions")
    assert (d / "per_frame.json").read_text() == (tmp_path / "fresh" / "per_frame.json").read_text()
    for name in os.listdir(d / "_progress"):
        marker = json.loads((d / "_progress" / name).read_text())
        assert marker["fingerprint"] == fresh["fingerprint"]
        assert marker["settings"]["weights_sha256"] == weights_sha256(b)
    # and back to A: A's numbers again, not B's
    again = _run(demo, d, a)
    assert again["J&F"] == first["J&F"]


def test_same_model_and_settings_resume(demo: str, tmp_path: Path) -> None:
    a = _model(1.0)
    first = _run(demo, tmp_path, a)
    GTPredictor.calls.clear()
    copy = _model(1.0)  # another module with equal weights: the same fingerprint
    again = _run(demo, tmp_path, copy, resume="strict")
    assert GTPredictor.calls == [] and again["J&F"] == first["J&F"]
    assert again["videos_redone"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": "appear"}, "evaluation.prompt"),
        ({"skip_first_and_last": False}, "evaluation.skip_first_and_last"),
        ({"write_all_frames": True}, "evaluation.write_all_frames"),
        ({"max_objects_per_batch": 1}, "evaluation.max_objects_per_batch"),
    ],
)
def test_changed_settings_redo_or_refuse(
    demo: str, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    a = _model(1.0)
    _run(demo, tmp_path, a)
    before = _tree(tmp_path / "_progress")
    with pytest.raises(ResumeMismatchError, match=field.replace(".", r"\.")) as info:
        _run(demo, tmp_path, a, resume="strict", **change)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    assert _tree(tmp_path / "_progress") == before, "strict refuses before touching anything"
    GTPredictor.calls.clear()
    redone = _run(demo, tmp_path, a, **change)
    assert sorted(GTPredictor.calls) == ["demo_000", "demo_001"]
    fresh = _run(demo, tmp_path / "fresh", a, **change)
    assert redone["J&F"] == fresh["J&F"]


def test_strict_refuses_other_weights_naming_them(demo: str, tmp_path: Path) -> None:
    _run(demo, tmp_path, _model(1.0))
    with pytest.raises(ResumeMismatchError, match="weights_sha256"):
        _run(demo, tmp_path, _model(-1.0), resume="strict")


def test_markers_without_fingerprint_are_redone(demo: str, tmp_path: Path) -> None:
    a = _model(1.0)
    _run(demo, tmp_path, a)
    for p in (tmp_path / "_progress").iterdir():  # as written by an older version
        data = json.loads(p.read_text())
        data.pop("fingerprint")
        data.pop("settings")
        p.write_text(json.dumps(data))
    (tmp_path / "_progress" / "demo_001.json").write_text("{truncated")
    with pytest.raises(ResumeMismatchError, match="older version"):
        _run(demo, tmp_path, a, resume="strict")
    GTPredictor.calls.clear()
    _run(demo, tmp_path, a)
    assert sorted(GTPredictor.calls) == ["demo_000", "demo_001"]


def test_killed_redo_never_leaves_the_old_marker_over_new_predictions(
    demo: str, tmp_path: Path
) -> None:
    a, b = _model(1.0), _model(-1.0)
    first = _run(demo, tmp_path, a)

    class Killed(RuntimeError):
        pass

    class DiesMidVideo(WeightPredictor):
        def propagate_in_video(self, state: dict[str, Any], *, start_frame_idx: int | None = None):
            it = super().propagate_in_video(state, start_frame_idx=start_frame_idx)
            yield next(it)  # the first frame's predictions are written, then the kill
            raise Killed

    with pytest.raises(Killed):
        evaluate_model(
            model=b,
            data=demo,
            out=str(tmp_path),
            predictor_cls=DiesMidVideo,
            report=False,
            progress=False,
        )
    assert not (tmp_path / "_progress" / "demo_000.json").exists()
    GTPredictor.calls.clear()
    again = _run(demo, tmp_path, a)
    assert "demo_000" in GTPredictor.calls and again["J&F"] == first["J&F"]


def test_resume_off_redoes_everything(demo: str, tmp_path: Path) -> None:
    a = _model(1.0)
    _run(demo, tmp_path, a)
    GTPredictor.calls.clear()
    _run(demo, tmp_path, a, resume="off")
    assert sorted(GTPredictor.calls) == ["demo_000", "demo_001"]


def test_resume_mode_values() -> None:
    assert resume_mode(True) == "auto" and resume_mode(False) == "off"
    assert resume_mode("strict") == "strict"
    with pytest.raises(ValueError, match="auto, strict, off"):
        resume_mode("yes")


def test_weights_sha256_sees_every_tensor() -> None:
    a, b = _model(1.0), _model(1.0)
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.bias.add_(1e-7)
    assert weights_sha256(a) != weights_sha256(b)
    assert weights_sha256(a.to(torch.bfloat16)) != weights_sha256(_model(1.0))


def test_real_tiny_model_resumes_only_its_own_results(demo: str, tmp_path: Path) -> None:
    """The real model: rebuilt from the same name and seed it resumes (strict passes, nothing is
    evaluated again); other weights of the same architecture are refused under strict."""
    from sam2_core.model import build_model

    kw: dict[str, Any] = dict(data=demo, out=str(tmp_path), report=False, progress=False)
    first = evaluate_model(model="tiny", max_videos=1, **kw)
    again = evaluate_model(model="tiny", max_videos=1, resume="strict", **kw)
    assert again["videos_redone"] == [] and again["J&F"] == first["J&F"]
    assert again["fingerprint"] == first["fingerprint"]
    other = build_model("tiny", init_seed=1)
    with pytest.raises(ResumeMismatchError, match="weights_sha256"):
        evaluate_model(model=other, max_videos=1, resume="strict", **kw)
