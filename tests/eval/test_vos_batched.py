"""Objects tracked as one batch give what tracking them one by one gives; the demo evaluation
end to end on two short videos, fast.

The batched path (``VideoPredictor(batch_objects=True)``, the default) runs ``track_step`` once
per frame for all objects prompted on the same frame; the per-object path runs it once per
object with batch size 1, like Meta's predictor. In float32 both must agree to 1e-5.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sam2_core.data.prep.demo import write_demo_dataset
from sam2_core.data.readers.formats import iter_videos
from sam2_core.eval.vos import (
    auto_num_threads,
    evaluate_model,
    intra_op_threads,
    prompt_plan,
    propagate_video,
)
from sam2_core.model import SAM2Base, VideoPredictor, build_model

H, W, T = 64, 96, 12


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with intra_op_threads(1):
        yield


@pytest.fixture(scope="module")
def model() -> SAM2Base:
    torch.manual_seed(0)
    return build_model("tiny")


def _clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """12 frames with three moving shapes; their first-frame masks."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames, first = [], []
    for t in range(T):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 2] = (yy * 255 // H).astype(np.uint8)
        disc = (xx - (18 + 4 * t)) ** 2 + (yy - 22) ** 2 <= 10**2
        square = (np.abs(xx - (76 - 3 * t)) <= 8) & (np.abs(yy - 44) <= 8)
        bar = (np.abs(xx - 48) <= 20) & (np.abs(yy - (8 + 3 * t)) <= 3)
        img[disc] = (230, 40, 40)
        img[square] = (40, 230, 40)
        img[bar] = (250, 250, 250)
        frames.append(img)
        if t == 0:
            first = [disc, square, bar]
    return frames, first


def _run(
    model: SAM2Base, *, batch: bool, reverse_after: bool = False, **kw: Any
) -> tuple[VideoPredictor, Any, dict[tuple[int, bool], torch.Tensor]]:
    frames, first = _clip()
    pred = VideoPredictor(model, batch_objects=batch, **kw)
    state = pred.init_state(frames)
    for obj_id, m in zip((5, 2, 9), first):
        pred.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=m)
    got: dict[tuple[int, bool], torch.Tensor] = {}
    for f, ids, masks in pred.propagate_in_video(state):
        assert ids == [5, 2, 9] and masks.shape == (3, 1, H, W)
        got[(f, False)] = masks
    if reverse_after:
        # A click on the last frame becomes a conditioning frame of object 2 only: its bank
        # now differs, so it is tracked alone, the other two still together.
        pred.add_new_points_or_box(state, frame_idx=T - 1, obj_id=2, points=[[60, 44]], labels=[1])
        for f, _, masks in pred.propagate_in_video(state, start_frame_idx=T - 1, reverse=True):
            got[(f, True)] = masks
    return pred, state, got


def _assert_same(a: dict[Any, torch.Tensor], b: dict[Any, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=f"frame {k}")


def test_batched_equals_per_object(model: SAM2Base) -> None:
    _, s1, per_obj = _run(model, batch=False)
    _, s2, batched = _run(model, batch=True)
    assert len(per_obj) == T
    _assert_same(per_obj, batched)
    # Stored memories and pointers (what later frames attend to) agree as well.
    for i in range(3):
        for t in range(1, T):
            a = s1.output_dict_per_obj[i]["non_cond_frame_outputs"][t]
            b = s2.output_dict_per_obj[i]["non_cond_frame_outputs"][t]
            assert b["maskmem_features"].shape == a["maskmem_features"].shape
            torch.testing.assert_close(b["obj_ptr"], a["obj_ptr"], rtol=0, atol=1e-5)
            # Stored in bf16: a float32 difference of ~1e-7 may round to the neighbouring
            # bf16 value, so allow one bf16 step.
            torch.testing.assert_close(
                b["maskmem_features"].float(), a["maskmem_features"].float(), rtol=2**-7, atol=1e-5
            )


def test_batched_with_later_click_and_reverse(model: SAM2Base) -> None:
    """Objects whose banks diverge are split into groups; results still agree."""
    kw = {"add_all_frames_to_correct_as_cond": True}
    _, _, per_obj = _run(model, batch=False, reverse_after=True, **kw)
    pred, state, batched = _run(model, batch=True, reverse_after=True, **kw)
    _assert_same(per_obj, batched)
    assert pred.tracking_groups(state) == [[0, 2], [1]]


def test_batched_bounded_memory_and_clear_around_input(model: SAM2Base) -> None:
    kw = {"bounded_memory": True, "clear_non_cond_mem_around_input": True}
    _, s1, per_obj = _run(model, batch=False, **kw)
    _, s2, batched = _run(model, batch=True, **kw)
    _assert_same(per_obj, batched)
    for i in range(3):
        a, b = s1.output_dict_per_obj[i], s2.output_dict_per_obj[i]
        assert a["non_cond_frame_outputs"].keys() == b["non_cond_frame_outputs"].keys()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    write_demo_dataset(dst=str(d), num_videos=2, num_frames=24)
    return d


def test_one_pass_appear_equals_separate_runs(model: SAM2Base, demo: Path) -> None:
    """prompt="appear": one batched pass with shared features == one per-object run per prompt
    frame (the official protocol for objects appearing later); earlier frames are empty."""
    records = list(iter_videos(str(demo)))
    late = 0
    for rec in records:
        plan = prompt_plan(rec, "appear")
        late += len(plan) > 1
        one = {
            (o.frame_index, obj): o.logits[i]
            for o in propagate_video(VideoPredictor(model), rec, prompt="appear")
            for i, obj in enumerate(o.obj_ids)
        }
        separate = {
            (o.frame_index, obj): o.logits[i]
            for o in propagate_video(
                VideoPredictor(model, batch_objects=False), rec, prompt="appear", one_pass=False
            )
            for i, obj in enumerate(o.obj_ids)
        }
        assert separate.keys() <= one.keys()
        for key, want in separate.items():
            np.testing.assert_allclose(one[key], want, rtol=0, atol=1e-5, err_msg=str(key))
        for key in one.keys() - separate.keys():  # before the object's prompt frame
            assert (one[key] < 0).all(), key
    assert late > 0, "the demo set should have objects that appear later"


def test_auto_threads_rule(model: SAM2Base, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_num_threads(model, torch.device("cpu")) == 1
    assert auto_num_threads(model, torch.device("cuda")) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert auto_num_threads(model, torch.device("cpu")) is None


def test_evaluate_demo_end_to_end_fast(demo: Path, tmp_path: Path) -> None:
    """``evaluate_model`` with the tiny model on 2 demo videos: every output, quickly."""
    torch.manual_seed(0)
    saved = torch.get_num_threads()
    t0 = time.perf_counter()
    summary = evaluate_model(model="tiny", data=str(demo), out=str(tmp_path / "ev"), progress=False)
    elapsed = time.perf_counter() - t0
    assert torch.get_num_threads() == saved  # the thread setting is restored
    out = tmp_path / "ev"
    for name in ("results.csv", "summary.json", "per_video.csv", "report.html"):
        assert (out / name).is_file(), name
    assert summary["num_videos"] == 2 and 0.0 <= summary["J&F"] <= 100.0
    assert json.loads((out / "summary.json").read_text())["J&F"] == summary["J&F"]
    pngs = list((out / "predictions").rglob("*.png"))
    assert pngs, "no prediction PNGs written"
    assert elapsed < 15.0, f"2 demo videos took {elapsed:.1f} s"
