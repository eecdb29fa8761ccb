"""RLE decoded straight to bit-packed planes: bit-exact against pycocotools, and the transforms
give the same clip from packed and from plain masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from sam2_core.data.packed_masks import decode_packed, rle_counts
from sam2_core.data.records import DataError
from sam2_core.data.transforms import ClipParams, TransformConfig, transform_clip


def _masks(num: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((num, h, w), dtype=bool)
    for o in range(num):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h / 2)
        out[o] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        out[o] ^= rng.random((h, w)) < 0.05  # many short runs, long counts with negatives
    if num > 2:
        out[1] = False  # empty
        out[2] = True  # full (a zero-length first run)
    return out


def _counts(m: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]


@pytest.mark.parametrize("num", [0, 1, 3, 11])
def test_packed_decode_matches_pycocotools(num: int) -> None:
    h, w = 37, 53
    masks = _masks(num, h, w, seed=num)
    counts: list[bytes | None] = [_counts(m) for m in masks]
    if num > 3:
        counts[3] = None  # object absent on this frame
        masks[3] = False
    packed = decode_packed(counts, height=h, width=w)
    assert packed.shape == (num, h, w)
    assert packed.planes.shape == (w, h, max(1, -(-num // 8)))
    np.testing.assert_array_equal(packed.unpack(), masks)
    np.testing.assert_array_equal(packed.nonempty, masks.any(axis=(1, 2)))
    for c in counts:
        if c is not None:
            runs = rle_counts(c)
            assert int(runs.sum()) == h * w and int(runs.min()) >= 0


def test_bad_rle_is_a_data_error() -> None:
    good = _counts(_masks(1, 10, 10, 0)[0])
    with pytest.raises(DataError, match="covers"):
        decode_packed([good], height=10, width=11)
    with pytest.raises(DataError, match="characters"):
        decode_packed([b"0 1"], height=10, width=10)


def test_transform_gives_the_same_clip_from_packed_and_plain_masks() -> None:
    h, w, t = 48, 64, 3
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(t)]
    plain = [_masks(3, h, w, seed=10 + i) for i in range(t)]
    packed = [decode_packed([_counts(m) for m in f], height=h, width=w) for f in plain]
    cfg = TransformConfig(resolution=40)
    for seed in range(4):
        a = transform_clip(images, plain, cfg=cfg, rng=np.random.default_rng(seed))
        b = transform_clip(images, packed, cfg=cfg, rng=np.random.default_rng(seed))
        assert a.params == b.params
        assert torch.equal(a.masks, b.masks) and torch.equal(a.images, b.images)
    params = ClipParams(flip=True, angle=24.0, shear=-19.0, affine=True, frame_jitter=[])
    params.frame_jitter = [((1.0, 1.0, 1.0), (0, 1, 2))] * t
    c = transform_clip(images, plain, cfg=cfg, params=ClipParams(**vars(params)))
    d = transform_clip(images, packed, cfg=cfg, params=ClipParams(**vars(params)))
    assert c.params.affine == d.params.affine
    assert torch.equal(c.masks, d.masks)
