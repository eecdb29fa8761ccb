"""VideoPredictor behaviour on a synthetic 8-frame clip (tiny model, random weights).

Numerics are covered by test_video_golden.py; here: shapes, object ids, frame order forward and
reverse, prompts of every kind (mask, clicks, box, correction clicks), frame sources, offloading,
bounded memory, error messages, and that the model's mode and flags are restored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_core.model import SAM2Base, VideoPredictor, build_model
from sam2_core.model.predictor import fill_holes_in_mask_scores

H, W, T = 72, 104, 8


def _clip() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """8 RGB frames with a red disc moving right and a blue square moving left; GT masks."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames, discs, squares = [], [], []
    for t in range(T):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 1] = (xx * 255 // W).astype(np.uint8)
        disc = (xx - (20 + 6 * t)) ** 2 + (yy - 30) ** 2 <= 12**2
        square = (np.abs(xx - (80 - 5 * t)) <= 9) & (np.abs(yy - 48) <= 9)
        img[disc] = (230, 30, 30)
        img[square] = (30, 30, 230)
        frames.append(img)
        discs.append(disc)
        squares.append(square)
    return frames, np.stack(discs), np.stack(squares)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this module runs with one intra-op thread (see conftest)."""


@pytest.fixture(scope="module")
def model() -> SAM2Base:
    torch.manual_seed(0)
    return build_model("tiny")


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    return _clip()


def test_two_objects_forward_then_reverse(
    model: SAM2Base, clip: tuple[list[np.ndarray], np.ndarray, np.ndarray]
) -> None:
    frames, discs, squares = clip
    pred = VideoPredictor(model)
    state = pred.init_state(frames)
    assert (state.num_frames, state.video_height, state.video_width) == (T, H, W)

    f, ids, masks = pred.add_new_mask(state, frame_idx=0, obj_id=7, mask=discs[0])
    assert (f, ids, masks.shape) == (0, [7], (1, 1, H, W))
    ys, xs = np.nonzero(squares[0])
    _, ids, masks = pred.add_new_points_or_box(
        state, frame_idx=0, obj_id=3, points=[[xs.mean(), ys.mean()]], labels=[1]
    )
    assert ids == [7, 3] and masks.shape == (2, 1, H, W)

    seen = []
    for f, ids, masks in pred.propagate_in_video(state):
        assert ids == [7, 3]
        assert masks.shape == (2, 1, H, W) and masks.dtype == torch.float32
        assert torch.isfinite(masks).all()
        seen.append(f)
    assert seen == list(range(T))
    for idx in (0, 1):
        out = state.output_dict_per_obj[idx]
        assert sorted(out["cond_frame_outputs"]) == [0]
        assert sorted(out["non_cond_frame_outputs"]) == list(range(1, T))
        assert out["non_cond_frame_outputs"][5]["maskmem_features"].dtype == torch.bfloat16

    # A box on the last frame, then reverse propagation from there back to frame 0.
    ys, xs = np.nonzero(squares[-1])
    box = [xs.min(), ys.min(), xs.max(), ys.max()]
    _, ids, masks = pred.add_new_points_or_box(state, frame_idx=T - 1, obj_id=3, box=box)
    assert masks.shape == (2, 1, H, W)
    seen = [f for f, _, _ in pred.propagate_in_video(state, start_frame_idx=T - 1, reverse=True)]
    assert seen == list(range(T - 1, -1, -1))
    # obj 3's prompt on frame 7 made a new conditioning frame (it had been tracked: correction).
    assert T - 1 in state.output_dict_per_obj[1]["non_cond_frame_outputs"] or (
        T - 1 in state.output_dict_per_obj[1]["cond_frame_outputs"]
    )
    seen = [
        f
        for f, _, _ in pred.propagate_in_video(
            state, start_frame_idx=4, max_frame_num_to_track=2, reverse=True
        )
    ]
    assert seen == [4, 3, 2]


def test_correction_clicks_and_restored_model_state(
    model: SAM2Base, clip: tuple[list[np.ndarray], np.ndarray, np.ndarray]
) -> None:
    frames, discs, _ = clip
    model.train()
    pred = VideoPredictor(model, offload_state_to_cpu=True, offload_video_to_cpu=True)
    state = pred.init_state(frames)
    pred.add_new_mask(state, frame_idx=2, obj_id=1, mask=discs[2])
    for _ in pred.propagate_in_video(state):
        pass
    # Clicks on a tracked frame are combined with its previous mask logits.
    _, _, masks = pred.add_new_points_or_box(
        state, frame_idx=5, obj_id=1, points=[[50, 30]], labels=[1]
    )
    _, _, masks = pred.add_new_points_or_box(
        state, frame_idx=5, obj_id=1, points=[[5, 5]], labels=[0], clear_old_points=False
    )
    assert state.point_inputs_per_obj[0][5]["point_labels"].tolist() == [[1, 0]]
    assert masks.shape == (1, 1, H, W)
    seen = [f for f, _, _ in pred.propagate_in_video(state)]
    assert seen == list(range(2, T))  # forward from the earliest prompted frame
    assert (
        state.output_dict_per_obj[0]["non_cond_frame_outputs"][6]["pred_masks"].device.type == "cpu"
    )
    assert model.training and not model.sam_mask_decoder.dynamic_multimask_via_stability
    assert not model.binarize_mask_from_pts_for_mem_enc
    model.eval()


def test_frame_sources_and_bounded_memory(
    model: SAM2Base, clip: tuple[list[np.ndarray], np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    frames, discs, _ = clip
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{t * 4:05d}.jpg", quality=95)
    pred = VideoPredictor(model, bounded_memory=True)
    state = pred.init_state(str(tmp_path))
    assert (state.num_frames, state.video_height, state.video_width) == (T, H, W)
    pred.add_new_mask(state, frame_idx=0, obj_id=1, mask=torch.from_numpy(discs[0]))
    model.max_obj_ptrs_in_encoder = 3  # shrink the window so trimming shows on 8 frames
    try:
        for f, _, _ in pred.propagate_in_video(state):
            stored = state.output_dict_per_obj[0]["non_cond_frame_outputs"]
            assert len(stored) <= model.num_maskmem + 1
            assert f in stored or f == 0
    finally:
        model.max_obj_ptrs_in_encoder = 16
    pred.reset_state(state)
    assert state.num_objects == 0 and state.obj_ids == []


def test_errors(model: SAM2Base, clip: tuple[list[np.ndarray], np.ndarray, np.ndarray]) -> None:
    frames, discs, _ = clip
    pred = VideoPredictor(model)
    state = pred.init_state(frames[:3])
    with pytest.raises(RuntimeError, match="no objects"):
        next(iter(pred.propagate_in_video(state)))
    with pytest.raises(ValueError, match="out of range"):
        pred.add_new_mask(state, frame_idx=3, obj_id=1, mask=discs[0])
    with pytest.raises(ValueError, match=r"points .* or a box"):
        pred.add_new_points_or_box(state, frame_idx=0, obj_id=1)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        pred.add_new_mask(state, frame_idx=0, obj_id=1, mask=discs[:2])
    with pytest.raises(ValueError, match="uint8"):
        pred.init_state([f.astype(np.float32) for f in frames])


def test_fill_holes() -> None:
    logits = torch.full((1, 1, 12, 12), 5.0)
    logits[0, 0, 4:6, 4:6] = -3.0  # a 4-pixel hole
    logits[0, 0, :, 10:] = -3.0  # a 24-pixel background strip
    out = fill_holes_in_mask_scores(logits, max_area=8)
    assert torch.all(out[0, 0, 4:6, 4:6] == 0.1)
    assert torch.all(out[0, 0, :, 10:] == -3.0)


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu_masks(
    model: SAM2Base, clip: tuple[list[np.ndarray], np.ndarray, np.ndarray]
) -> None:
    """bf16 autocast on CUDA tracks like fp32 on the CPU (mask signs agree almost everywhere)."""
    frames, discs, _ = clip
    results = []
    for device in ("cpu", "cuda"):
        m = build_model("tiny", device=device)
        m.load_state_dict(model.state_dict())
        pred = VideoPredictor(m)
        state = pred.init_state(frames)
        pred.add_new_mask(state, frame_idx=0, obj_id=1, mask=discs[0])
        results.append(torch.cat([mk.cpu() for _, _, mk in pred.propagate_in_video(state)]))
    cpu, gpu = results
    assert gpu.dtype == torch.float32 and gpu.shape == cpu.shape == (T, 1, H, W)
    agree = ((cpu > 0) == (gpu > 0)).float().mean().item()
    assert agree > 0.97
