"""Prompt simulation: decisions, click samplers, boxes, image datasets, rank independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_core.train.prompts import (
    PromptConfig,
    PromptSimulator,
    mask_to_box,
    sample_box_points,
    sample_one_point_from_error_center,
    sample_random_points_from_errors,
)


def _masks(t: int = 8, o: int = 3, s: int = 32) -> torch.Tensor:
    m = torch.zeros(t, o, s, s, dtype=torch.bool)
    for i in range(o):
        m[:, i, 4 + i : 14 + 2 * i, 6 : 20 - i] = True
    return m


def test_mose_decision_statistics() -> None:
    sim = PromptSimulator(PromptConfig())
    masks = _masks()
    n = 400
    use_pt, n_init, n_corr, boxes = 0, [], [], 0
    for _ in range(n):
        plan = sim.plan(masks, training=True)
        assert plan.init_cond_frames[0] == 0
        assert plan.processing_order[: len(plan.init_cond_frames)] == plan.init_cond_frames
        assert sorted(plan.processing_order) == list(range(8))
        n_init.append(len(plan.init_cond_frames))
        if plan.use_pt_input:
            use_pt += 1
            assert not plan.mask_inputs_per_frame
            assert set(plan.init_cond_frames) <= set(plan.frames_to_add_correction_pt)
            n_corr.append(len(plan.frames_to_add_correction_pt))
            for pts in plan.point_inputs_per_frame.values():
                boxes += int(pts["point_labels"][0, 0] == 2)
        else:
            assert set(plan.mask_inputs_per_frame) == set(plan.init_cond_frames)
            assert plan.frames_to_add_correction_pt == []
    assert 0.4 < use_pt / n < 0.6
    assert set(n_init) == {1, 2} and 0.4 < n_init.count(2) / n < 0.6
    assert set(n_corr) == {1, 2}
    n_frames_prompted = sum(n_init[i] for i in range(n)) * use_pt / n
    assert 0.35 < boxes / n_frames_prompted < 0.65


def test_same_decisions_on_every_rank_different_clicks() -> None:
    masks = _masks()
    a = PromptSimulator(PromptConfig(), click_seed=1)
    b = PromptSimulator(PromptConfig(), click_seed=2)
    differ = False
    for _ in range(20):
        pa, pb = a.plan(masks, training=True), b.plan(masks, training=True)
        assert pa.use_pt_input == pb.use_pt_input
        assert pa.init_cond_frames == pb.init_cond_frames
        assert pa.frames_to_add_correction_pt == pb.frames_to_add_correction_pt
        for t in pa.point_inputs_per_frame:
            differ |= not torch.equal(
                pa.point_inputs_per_frame[t]["point_coords"],
                pb.point_inputs_per_frame[t]["point_coords"],
            )
    assert differ


def test_image_dataset_always_points() -> None:
    sim = PromptSimulator(PromptConfig(prob_to_use_pt_input_for_train=0.0))
    for _ in range(10):
        plan = sim.plan(_masks(t=1), training=True)
        assert plan.use_pt_input and plan.init_cond_frames == [0]
        assert plan.frames_to_add_correction_pt == [0]


def test_uniform_clicks_in_error_regions() -> None:
    gt = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    gt[:, :, 4:12, 4:12] = True
    pred = torch.zeros_like(gt)
    pred[0] = gt[0]  # perfect -> negative click in background
    pred[1, :, 0:2, 0:2] = True  # FP only outside GT + FN everywhere in GT
    pred[2] = True  # everything FP outside GT
    g = torch.Generator().manual_seed(0)
    pts, labels = sample_random_points_from_errors(gt, pred, 1, generator=g)
    assert pts.shape == (4, 1, 2) and labels.dtype == torch.int32
    for i in range(4):
        x, y = int(pts[i, 0, 0]), int(pts[i, 0, 1])
        inside = bool(gt[i, 0, y, x])
        if labels[i, 0] == 1:
            assert inside and not pred[i, 0, y, x]
        else:
            assert not inside
    assert labels[3, 0] == 1  # no prediction -> positive click inside the object


def test_center_click_is_distance_transform_maximum() -> None:
    gt = torch.zeros(1, 1, 21, 21, dtype=torch.bool)
    gt[:, :, 5:16, 5:16] = True
    pts, labels = sample_one_point_from_error_center(gt, None)
    assert labels.item() == 1
    assert pts[0, 0].tolist() == [10.0, 10.0]
    pred = gt.clone()
    pred[:, :, 0:9, 0:9] = True  # FP blob outside, no FN
    pts, labels = sample_one_point_from_error_center(gt, pred)
    assert labels.item() == 0
    x, y = pts[0, 0].long().tolist()
    assert pred[0, 0, y, x] and not gt[0, 0, y, x]


def test_boxes_and_noise() -> None:
    m = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    m[0, 0, 10:20, 30:50] = True
    assert mask_to_box(m)[0, 0].tolist() == [30, 10, 49, 19]
    assert mask_to_box(m)[1, 0].tolist() == [64, 64, -1, -1]
    coords, labels = sample_box_points(m[:1], noise=0.0)
    assert coords[0].tolist() == [[30.0, 10.0], [49.0, 19.0]]
    assert labels[0].tolist() == [2, 3]
    g = torch.Generator().manual_seed(0)
    noisy, _ = sample_box_points(m[:1], noise=0.1, noise_bound=20, generator=g)
    d = (noisy[0] - coords[0]).abs()
    assert (d[:, 0] <= 0.1 * 19 + 1e-5).all() and (d[:, 1] <= 0.1 * 9 + 1e-5).all()
    assert (noisy >= 0).all() and (noisy <= 63).all()


def test_rng_state_roundtrip() -> None:
    sim = PromptSimulator(PromptConfig())
    masks = _masks()
    sim.plan(masks, training=True)
    state = sim.state_dict()
    a = sim.plan(masks, training=True)
    sim2 = PromptSimulator(PromptConfig())
    sim2.load_state_dict(state)
    b = sim2.plan(masks, training=True)
    assert a.init_cond_frames == b.init_cond_frames and a.use_pt_input == b.use_pt_input
    for t in a.point_inputs_per_frame:
        assert torch.equal(
            a.point_inputs_per_frame[t]["point_coords"], b.point_inputs_per_frame[t]["point_coords"]
        )


def test_invalid_config_names_key() -> None:
    with pytest.raises(ValueError, match="prob_to_use_box_input_for_train"):
        PromptSimulator(PromptConfig(prob_to_use_box_input_for_train=1.5))
    with pytest.raises(ValueError, match="num_frames_to_correct_for_train"):
        PromptSimulator(PromptConfig(num_frames_to_correct_for_train=1))
    assert np.isclose(PromptConfig().prob_to_sample_from_gt_for_train, 0.1)
