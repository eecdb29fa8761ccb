"""VOS inference over a dataset: layouts, scoring, resume, prompts, the trainer's hook.

Most tests drive :mod:`sam2_core.eval.vos` with ``GTPredictor``, a real object with the
``VideoPredictor`` interface whose logits come from the ground truth (so the expected scores
are known); one test runs the real tiny model end to end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.readers.formats import iter_videos
from sam2_core.data.readers.records import VideoRecord
from sam2_core.eval.jf import evaluate_predictions
from sam2_core.eval.layouts import compose_labels, encode_binary_png, encode_palette_png
from sam2_core.eval.vos import evaluate_model, prompt_plan, validate_in_memory


class GTPredictor:
    """``VideoPredictor`` interface; an object's logits are +8 inside its GT mask, -8 outside
    (0 everywhere on frames without annotation), from its prompt frame on."""

    calls: list[str] = []

    def __init__(self, model: nn.Module, **_: Any) -> None:
        self.model = model

    def init_state(self, frames: VideoRecord) -> dict[str, Any]:
        GTPredictor.calls.append(frames.video_id)
        return {"rec": frames, "objs": {}}

    def reset_state(self, state: dict[str, Any]) -> None:
        state["objs"].clear()

    def add_new_mask(
        self, state: dict[str, Any], *, frame_idx: int, obj_id: int, mask: Any
    ) -> None:
        assert mask.dtype == bool and mask.shape == (state["rec"].height, state["rec"].width)
        state["objs"][obj_id] = frame_idx

    def propagate_in_video(self, state: dict[str, Any], *, start_frame_idx: int | None = None):
        rec: VideoRecord = state["rec"]
        ids = sorted(state["objs"])
        start = min(state["objs"].values()) if start_frame_idx is None else start_frame_idx
        for pos in range(start, len(rec.frame_indices)):
            f = rec.frame_indices[pos]
            masks = [torch.from_numpy(rec.mask(o, f)).float() * 16 - 8 for o in ids]
            yield pos, ids, torch.stack(masks)[:, None]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("demo")
    write_demo_dataset(dst=str(d), num_videos=2, num_frames=24, sizes=[(48, 64), (40, 72)])
    return str(d)


def _write_gt(records: list[VideoRecord], root: Path, layout: str) -> None:
    """GT of the records as official PNG folders (what sav_evaluator would be given)."""
    for rec in records:
        for f in rec.annotated_indices:
            if layout == "sav":
                for o in rec.obj_ids:
                    p = root / rec.video_id / f"{o:03d}" / f"{f:05d}.png"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(encode_binary_png(rec.mask(o, f)))
            else:
                p = root / rec.video_id / f"{f:05d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                labels = compose_labels({o + 1: rec.mask(o, f) for o in rec.obj_ids})
                p.write_bytes(encode_palette_png(labels))


def test_prompt_plan(demo: str) -> None:
    rec = next(iter_videos(demo))
    first = prompt_plan(rec, "first")
    appear = prompt_plan(rec, "appear")
    assert list(first) == [rec.annotated_indices[0]]
    assert sorted(o for objs in appear.values() for o in objs) == rec.obj_ids
    assert len(first[rec.annotated_indices[0]]) < len(rec.obj_ids)  # demo has late objects


def test_evaluate_model_sav_layout_matches_folder_scoring(demo: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = evaluate_model(
        model=nn.Linear(1, 1), data=demo, out=str(out), predictor_cls=GTPredictor, progress=False
    )
    for k in ("J&F", "J", "F", "num_videos", "num_objects"):
        assert k in summary
    assert summary["num_videos"] == 2 and summary["layout"] == "sav"
    records = list(iter_videos(demo))
    # Objects visible on the first frame are perfect; late objects are never prompted.
    res_scores = json.loads((out / "summary.json").read_text())["per_object"]
    for rec in records:
        first = set(prompt_plan(rec, "first")[rec.annotated_indices[0]])
        for o in rec.obj_ids:
            got = res_scores[rec.video_id].get(f"{o:03d}")
            if got is not None:
                assert got["J&F"] == (100.0 if o in first else 0.0)
        pngs = sorted(os.listdir(out / "predictions" / rec.video_id / "000"))
        assert pngs == [f"{f:05d}.png" for f in rec.annotated_indices]
        assert (out / "_progress" / f"{rec.video_id}.json").exists()
    for name in ("results.csv", "per_video.csv", "per_frame.json", "report.html"):
        assert (out / name).is_file()
    # The written predictions, scored from files exactly like the official tool, agree.
    _write_gt(records, tmp_path / "gt", "sav")
    files = evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(out / "predictions"))
    assert pytest.approx(summary["J&F"], abs=1e-9) == files.JF
    assert files.results_csv() == (out / "results.csv").read_text()


def test_appear_prompts_track_late_objects(demo: str, tmp_path: Path) -> None:
    summary = evaluate_model(
        model=nn.Linear(1, 1),
        data=demo,
        out=str(tmp_path / "o"),
        prompt="appear",
        max_objects_per_batch=1,
        predictor_cls=GTPredictor,
        report=False,
        progress=False,
    )
    assert summary["J&F"] == 100.0 and summary["J"] == 100.0


def test_resume_skips_finished_videos(demo: str, tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(
        model=nn.Linear(1, 1),
        data=demo,
        out=str(tmp_path),
        predictor_cls=GTPredictor,
        report=False,
        progress=False,
    )
    first = evaluate_model(**kw)
    GTPredictor.calls.clear()
    again = evaluate_model(**kw)
    assert GTPredictor.calls == [] and again["J&F"] == first["J&F"]
    os.remove(tmp_path / "_progress" / "demo_001.json")
    evaluate_model(**kw)
    assert GTPredictor.calls == ["demo_001"]


def test_davis_layout_non_overlapping_palette(demo: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    records = [_shift_ids(r) for r in iter_videos(demo)]  # DAVIS palette indices must be 1..255
    summary = evaluate_model(
        model=nn.Linear(1, 1),
        data=records,
        out=str(out),
        layout="davis",
        predictor_cls=GTPredictor,
        report=False,
        progress=False,
    )
    vid = records[0].video_id
    names = sorted(os.listdir(out / "predictions" / vid))
    assert names == [f"{f:05d}.png" for f in records[0].annotated_indices]
    from PIL import Image

    with Image.open(out / "predictions" / vid / names[1]) as im:
        assert im.mode == "P"
        labels = set(np.unique(np.array(im)).tolist())
    assert labels <= {0, *records[0].obj_ids}
    _write_gt(list(iter_videos(demo)), tmp_path / "gt", "davis")
    files = evaluate_predictions(gt_dir=str(tmp_path / "gt"), pred_dir=str(out / "predictions"))
    assert pytest.approx(summary["J&F"], abs=1e-9) == files.JF


def _shift_ids(rec: VideoRecord) -> VideoRecord:
    from sam2_core.data.readers.records import VideoObject

    objs = {o + 1: VideoObject(o + 1, rec.objects[o].masks) for o in rec.obj_ids}
    return VideoRecord(
        rec.video_id,
        rec.height,
        rec.width,
        rec.frame_indices,
        rec.annotated_indices,
        objs,
        rec.load_image_bytes,
        rec.source,
        rec.split,
    )


def test_validate_in_memory_restores_mode(demo: str) -> None:
    model = nn.Linear(1, 1)
    model.train()
    summary = validate_in_memory(model, iter_videos(demo), max_videos=1, predictor_cls=GTPredictor)
    assert model.training
    assert summary["num_videos"] == 1 and 0.0 <= summary["J&F"] <= 100.0
    assert list(summary["per_video"]) == ["demo_000"]


def test_real_tiny_model_end_to_end(tmp_path: Path) -> None:
    """The real VideoPredictor with the random-init tiny model: files and shapes, not quality."""
    pytest.importorskip("sam2_core.model.predictor")
    data = tmp_path / "data"
    write_demo_dataset(dst=str(data), num_videos=1, num_frames=12, sizes=[(48, 80)])
    out = tmp_path / "out"
    summary = evaluate_model(
        model="tiny", data=str(data), out=str(out), device="cpu", progress=False
    )
    rec = next(iter_videos(str(data)))
    assert summary["num_videos"] == 1 and summary["device"] == "cpu"
    assert 0.0 <= summary["J&F"] <= 100.0
    for o in rec.obj_ids:
        d = out / "predictions" / rec.video_id / f"{o:03d}"
        assert sorted(os.listdir(d)) == [f"{f:05d}.png" for f in rec.annotated_indices]
        from PIL import Image

        with Image.open(d / f"{rec.annotated_indices[-1]:05d}.png") as im:
            assert im.size == (rec.width, rec.height)
    assert (out / "report.html").stat().st_size > 1000
