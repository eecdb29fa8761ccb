"""Hole filling of predicted masks against a plain reference, and the predictor's default.

Reference (what Meta's ``fill_holes_in_mask_scores`` specifies): label the 8-connected
components of the background (logits <= 0) with scipy, and set every component of area
<= ``max_area`` to the logit 0.1; everything else keeps its logit.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from scipy import ndimage

from sam2_core.model import VideoPredictor
from sam2_core.model.predictor import MaskPostprocessor, fill_holes_in_mask_scores

#: Meta's ``build_sam2_video_predictor`` sets ``fill_hole_area=8`` (sam2 1.1).
META_FILL_HOLE_AREA = 8


def _reference(logits: np.ndarray, max_area: int) -> np.ndarray:
    """``logits [B, 1, h, w]`` with small background components set to 0.1."""
    out = logits.copy()
    for i in range(logits.shape[0]):
        bg = logits[i, 0] <= 0
        labels, n = ndimage.label(bg, structure=np.ones((3, 3), dtype=bool))
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        small = (labels > 0) & (areas[labels] <= max_area)
        out[i, 0][small] = np.float32(0.1)
    return out


def _random_logits(rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
    """Blobby random masks: smoothed noise, so holes and islands of many sizes appear."""
    noise = rng.standard_normal((b, 1, h, w)).astype(np.float32)
    smooth = ndimage.uniform_filter(noise, size=(1, 1, 3, 3))
    # Shift so that the foreground dominates and background holes are frequent.
    return (smooth * 8.0 + rng.uniform(0.0, 1.5)).astype(np.float32)


@pytest.mark.parametrize("max_area", [1, 4, 8, 30])
def test_fill_holes_matches_connected_components_reference(max_area: int) -> None:
    rng = np.random.default_rng(max_area)
    filled_any = False
    for _ in range(20):
        h, w = (int(x) for x in rng.integers(8, 40, size=2))
        logits = _random_logits(rng, int(rng.integers(1, 4)), h, w)
        got = fill_holes_in_mask_scores(torch.from_numpy(logits), max_area=max_area).numpy()
        want = _reference(logits, max_area)
        np.testing.assert_array_equal(got, want)
        filled_any |= bool((got != logits).any())
    assert filled_any  # the random masks did contain holes to fill


def test_fill_holes_keeps_input_and_dtype() -> None:
    logits = torch.full((2, 1, 10, 10), 3.0)
    logits[1, 0, 2:4, 2:4] = -1.0
    before = logits.clone()
    out = fill_holes_in_mask_scores(logits, max_area=8)
    assert torch.equal(logits, before) and out.dtype == logits.dtype
    assert torch.all(out[1, 0, 2:4, 2:4] == 0.1) and torch.equal(out[0], before[0])


def test_postprocessor_fill_holes_off_is_identity() -> None:
    logits = torch.randn(2, 1, 16, 16)
    assert MaskPostprocessor(fill_hole_area=0, non_overlap_masks=False).fill_holes(logits) is logits


def test_predictor_default_fill_hole_area_equals_meta() -> None:
    default = inspect.signature(VideoPredictor).parameters["fill_hole_area"].default
    assert default == META_FILL_HOLE_AREA
