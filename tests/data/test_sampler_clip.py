"""Clip sampler: consecutive windows, reversal, visible objects, the rules for unusable videos."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_core.data.loader.sampler import ClipSampler


def test_window_is_consecutive_and_objects_visible_on_first_frame() -> None:
    visible = {p: [1, 2, 3, 4] if p % 2 == 0 else [5] for p in range(20)}
    s = ClipSampler(num_frames=8, max_num_objects=3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = s.sample(num_annotated=20, visible=visible.__getitem__, rng=rng)
        assert c is not None and not c.reversed
        assert c.positions == list(range(c.positions[0], c.positions[0] + 8))
        assert 0 <= c.positions[0] <= 12
        assert set(c.obj_ids) <= set(visible[c.positions[0]])
        assert len(c.obj_ids) == min(3, len(visible[c.positions[0]]))
        assert len(set(c.obj_ids)) == len(c.obj_ids)


def test_reversed_clip_takes_objects_from_its_first_frame() -> None:
    visible = {p: [p] for p in range(10)}
    s = ClipSampler(num_frames=4, max_num_objects=3, reverse_time_prob=1.0)
    c = s.sample(num_annotated=10, visible=visible.__getitem__, rng=np.random.default_rng(1))
    assert c is not None and c.reversed
    assert c.positions == sorted(c.positions, reverse=True)
    assert c.obj_ids == [c.positions[0]]


def test_unusable_videos_give_none_without_looping() -> None:
    s = ClipSampler(num_frames=8)
    calls: list[int] = []

    def nothing(p: int) -> list[int]:
        calls.append(p)
        return []

    assert not s.usable(7)
    assert s.sample(num_annotated=7, visible=nothing, rng=np.random.default_rng(0)) is None
    assert s.sample(num_annotated=12, visible=nothing, rng=np.random.default_rng(0)) is None
    assert sorted(calls) == list(range(5)), "each window start is tried exactly once"
    only_last = {p: ([7] if p == 4 else []) for p in range(12)}
    c = s.sample(num_annotated=12, visible=only_last.__getitem__, rng=np.random.default_rng(0))
    assert c is not None and c.positions[0] == 4 and c.obj_ids == [7]


def test_same_seed_same_clip() -> None:
    vis = {p: [1, 2, 3, 4, 5] for p in range(30)}
    s = ClipSampler()
    a = s.sample(num_annotated=30, visible=vis.__getitem__, rng=np.random.default_rng(7))
    b = s.sample(num_annotated=30, visible=vis.__getitem__, rng=np.random.default_rng(7))
    assert a == b
    with pytest.raises(ValueError):
        ClipSampler(num_frames=0)
