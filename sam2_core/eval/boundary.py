"""Per-frame region (J) and boundary (F) scores with the DAVIS / SA-V definitions.

Definitions (identical to the official evaluators):

* J = |P ∩ G| / |P ∪ G|, and 1 when both masks are empty.
* Boundary maps are 1-pixel wide and offset half a pixel towards the origin: pixel (y, x) is on
  the boundary when the mask differs between (y, x) and one of (y, x+1), (y+1, x), (y+1, x+1);
  the last row only compares with the right neighbour, the last column only with the one below,
  and the bottom-right pixel is never a boundary pixel.
* A boundary pixel of one mask "matches" when a boundary pixel of the other mask lies inside the
  tolerance disk around it: integer offsets (dy, dx) with dy² + dx² <= r², where
  r = ceil(0.008 * sqrt(H² + W²)) (the disk used with a binary dilation in the originals).
* precision = matched pred boundary / pred boundary, recall = matched GT boundary / GT boundary,
  with the conventions: both boundaries empty -> P = R = 1; pred empty only -> P = 1, R = 0;
  GT empty only -> P = 0, R = 1. F = 2PR / (P + R), 0 when P + R = 0.

Speed: everything is computed on the bounding box of ``pred | gt`` padded by one pixel and
clipped to the frame. Why this is exact: every boundary pixel lies in rows
[y0 - 1, y1] and columns [x0 - 1, x1] of the union box, a crop whose last row/column is either
the frame's own last row/column (same special rules) or an all-zero row/column (where both rules
give 0) has the same boundary pixels as the full frame, and matching only depends on the
distances between boundary pixels, all of which lie inside the crop. The "dilation" is done with
an exact Euclidean distance transform of the other boundary map, read only at boundary pixels:
a pixel is inside the dilated map exactly when its distance to the nearest boundary pixel is at
most r (distances are square roots of integers, so a margin far below the gap to the next
possible distance, sqrt(r² + 1), makes the float comparison exact).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Boundary tolerance as a fraction of the image diagonal (DAVIS / SA-V).
BOUNDARY_FRACTION = 0.008


def tolerance_radius(shape: tuple[int, ...], fraction: float = BOUNDARY_FRACTION) -> int:
    """Disk radius in pixels for an ``[H, W]`` frame: ``ceil(fraction * ||(H, W)||_2)``."""
    h, w = int(shape[-2]), int(shape[-1])
    return math.ceil(fraction * float(np.linalg.norm([h, w])))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element ``uint8 [2r+1, 2r+1]``: 1 where dy² + dx² <= r²."""
    r = int(radius)
    offs = np.arange(-r, r + 1)
    return ((offs[:, None] ** 2 + offs[None, :] ** 2) <= r * r).astype(np.uint8)


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of a mask, ``bool [H, W]`` -> ``bool [H, W]`` (definition above)."""
    s = np.asarray(seg, dtype=bool)
    b = np.zeros_like(s)
    if s.shape[0] == 0 or s.shape[1] == 0:
        return b
    core = s[:-1, :-1]
    # Interior: compare with the right, lower and lower-right neighbours.
    b[:-1, :-1] = (core ^ s[:-1, 1:]) | (core ^ s[1:, :-1]) | (core ^ s[1:, 1:])
    # Last row: right neighbour only; last column: lower neighbour only; corner stays 0.
    b[-1, :-1] = s[-1, :-1] ^ s[-1, 1:]
    b[:-1, -1] = s[:-1, -1] ^ s[1:, -1]
    return b


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(y0, y1, x0, x1)`` (end exclusive) of a ``bool [H, W]`` mask, None if empty."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    if w == 0 or h == 0:
        return None
    return y, y + h, x, x + w


def _count_matches(src: np.ndarray, other: np.ndarray, radius: int) -> int:
    """Number of True pixels of ``src`` within distance ``radius`` of a True pixel of ``other``.

    Both ``bool [h, w]``; ``other`` must have at least one True pixel.
    """
    # distanceTransform measures the distance to the nearest *zero* pixel.
    dist = cv2.distanceTransform(
        np.ascontiguousarray(~other).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    limit = radius + 0.25 / (radius + 1.0)  # < sqrt(r² + 1) for every r >= 0
    return int(np.count_nonzero(dist[src] <= limit))


def f_measure(n_pred: int, n_gt: int, pred_match: int, gt_match: int) -> float:
    """F from boundary pixel counts, with the official empty-boundary conventions."""
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = pred_match / float(n_pred)
        recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def boundary_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """Boundary F-measure of two ``bool [h, w]`` masks of the same (possibly cropped) frame."""
    bp = boundary_map(pred)
    bg = boundary_map(gt)
    n_pred = int(np.count_nonzero(bp))
    n_gt = int(np.count_nonzero(bg))
    if n_pred == 0 or n_gt == 0:
        return f_measure(n_pred, n_gt, 0, 0)
    return f_measure(n_pred, n_gt, _count_matches(bp, bg, radius), _count_matches(bg, bp, radius))


def frame_scores(
    pred: np.ndarray, gt: np.ndarray, radius: int | None = None
) -> tuple[float, float]:
    """``(J, F)`` in [0, 1] of one object on one frame; ``pred``/``gt`` are ``bool [H, W]``.

    ``radius`` defaults to :func:`tolerance_radius` of the frame. Work is restricted to the
    padded bounding box of ``pred | gt`` (exact, see the module docstring).
    """
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be equal 2-D shapes")
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    r = tolerance_radius(gt.shape) if radius is None else int(radius)
    bp, bg = bbox(pred), bbox(gt)
    if bp is None and bg is None:
        return 1.0, 1.0
    boxes = [b for b in (bp, bg) if b is not None]
    h, w = gt.shape
    pad = 1  # enough for exact boundary maps; matching needs no margin (module docstring)
    y0 = max(min(b[0] for b in boxes) - pad, 0)
    y1 = min(max(b[1] for b in boxes) + pad, h)
    x0 = max(min(b[2] for b in boxes) - pad, 0)
    x1 = min(max(b[3] for b in boxes) + pad, w)
    pc = pred[y0:y1, x0:x1]
    gc = gt[y0:y1, x0:x1]
    inter = int(np.count_nonzero(pc & gc))
    total = int(np.count_nonzero(pc)) + int(np.count_nonzero(gc))
    j = inter / float(total - inter)
    return j, boundary_f(pc, gc, r)
