"""J&F speed: object-frames/s on synthetic 1080p masks, sam2_core.eval vs a straightforward baseline.

Baseline (what a direct port of the DAVIS/SA-V code does, in one process): full-frame numpy J,
full-frame 1-pixel boundary maps, cv2.dilate of both maps with the disk, counts. The measured
path is sam2_core.eval.boundary.frame_scores (bounding-box crop + exact distance-transform
matching). Both run single-threaded (cv2.setNumThreads(1)) on the same masks, and the results
are checked to be identical. Object sizes are log-uniform (radius 10-480 px); a per-size table
shows where the speed-up comes from.

    .venv/bin/python benchmarks/jf.py [--num 48] [--repeat 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import cv2
import numpy as np

from sam2_core.eval.boundary import disk, f_measure, frame_scores

H, W = 1080, 1920


def baseline_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Full-frame J and F, the textbook way."""
    inter = int(np.logical_and(pred, gt).sum())
    union = int(np.logical_or(pred, gt).sum())
    j = 1.0 if union == 0 else inter / union

    def bmap(seg: np.ndarray) -> np.ndarray:
        e = np.zeros_like(seg)
        s = np.zeros_like(seg)
        se = np.zeros_like(seg)
        e[:, :-1] = seg[:, 1:]
        s[:-1, :] = seg[1:, :]
        se[:-1, :-1] = seg[1:, 1:]
        b = (seg ^ e) | (seg ^ s) | (seg ^ se)
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = False
        return b

    r = math.ceil(0.008 * np.linalg.norm(gt.shape))
    k = disk(r)
    bp, bg = bmap(pred), bmap(gt)
    dp = cv2.dilate(bp.astype(np.uint8), k)
    dg = cv2.dilate(bg.astype(np.uint8), k)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    return j, f_measure(n_p, n_g, int((bp & (dg > 0)).sum()), int((bg & (dp > 0)).sum()))


def blob(rng: np.random.Generator, cy: float, cx: float, radius: float) -> np.ndarray:
    """A wobbly filled polygon ``bool [H, W]`` with jagged boundary pixels."""
    m = np.zeros((H, W), np.uint8)
    th = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    rad = radius * (1 + 0.15 * np.sin(3 * th + rng.uniform(0, 6)) + 0.02 * rng.standard_normal(180))
    pts = np.stack([cx + rad * np.cos(th), cy + rad * np.sin(th)], 1).round().astype(np.int32)
    cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def make_set(num: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        radius = float(np.exp(rng.uniform(np.log(10), np.log(480))))
        cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.15, 0.85) * W
        gt = blob(rng, cy, cx, radius)
        shift = rng.normal(0, 0.06 * radius, size=2)
        pred = blob(rng, cy + shift[0], cx + shift[1], radius * rng.uniform(0.85, 1.15))
        out.append((pred, gt, radius))
    return out


def rate(fn, data, repeat: int) -> tuple[float, list[float]]:
    per = [0.0] * len(data)
    t0 = time.perf_counter()
    for _ in range(repeat):
        for i, (p, g, _r) in enumerate(data):
            t = time.perf_counter()
            fn(p, g)
            per[i] += time.perf_counter() - t
    total = time.perf_counter() - t0
    return repeat * len(data) / total, [x / repeat for x in per]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--num", type=int, default=48, help="object-frames in the synthetic set")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    data = make_set(args.num, args.seed)
    for p, g, _ in data:  # same numbers, exactly
        assert frame_scores(p, g) == baseline_scores(p, g)
    base_rate, base_t = rate(baseline_scores, data, args.repeat)
    fast_rate, fast_t = rate(frame_scores, data, args.repeat)
    print(f"synthetic set: {len(data)} object-frames at {W}x{H}, tolerance radius 18 px")
    print(f"{'object radius':>14} {'n':>3} {'baseline ms':>12} {'ours ms':>8} {'ratio':>6}")
    edges = [10, 30, 90, 270, 481]
    for lo, hi in itertools.pairwise(edges):
        idx = [i for i, (_, _, r) in enumerate(data) if lo <= r < hi]
        if idx:
            b = float(np.mean([base_t[i] for i in idx])) * 1e3
            f = float(np.mean([fast_t[i] for i in idx])) * 1e3
            print(f"{f'{lo}-{hi - 1} px':>14} {len(idx):>3} {b:>12.2f} {f:>8.2f} {b / f:>5.1f}x")
    print(f"baseline (full frame, cv2.dilate, 1 process): {base_rate:8.1f} object-frames/s")
    print(f"sam2_core.eval (crop + distance transform):   {fast_rate:8.1f} object-frames/s")
    print(f"ratio: {fast_rate / base_rate:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
