"""Clip augmentations: masks move exactly like images, consistency across frames, the skip rule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sam2_core.data.loader.config import AugmentConfig
from sam2_core.data.loader.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipParams,
    geometry_matrix,
    pixel_matrix,
    transform_clip,
)

NEUTRAL = ((1.0, 1.0, 1.0), (0, 1, 2))
AUGMENT = AugmentConfig()
NO_AUGMENT = AugmentConfig(enabled=False)


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])  # lossless, so pixels are exact
    assert ok
    return buf.tobytes()


def _denorm(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def _blobs(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((2, h, w), np.uint8)
    for o in range(2):
        c = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
        cv2.ellipse(m[o], c, (w // 6, h // 5), float(rng.integers(0, 90)), 0, 360, 1, -1)
    return m.astype(bool)


@pytest.mark.parametrize("flip,angle,shear", [(False, 0, 0), (True, 0, 0), (True, 21.0, -17.0)])
def test_masks_move_exactly_like_images(flip: bool, angle: float, shear: float) -> None:
    """Warp an image whose pixels encode the masks; threshold it; compare with the warped masks."""
    h, w, res = 90, 160, 96
    masks = [_blobs(h, w, s) for s in range(3)]
    # Red channel = object 1, green = object 2 (255 inside); blue 0.
    images = [
        _jpeg(np.stack([m[0] * 255, m[1] * 255, np.zeros((h, w))], -1).astype(np.uint8))
        for m in masks
    ]
    params = ClipParams(
        flip=flip, angle=angle, shear=shear, affine=True, frame_jitter=[NEUTRAL] * 3
    )
    out = transform_clip(images, masks, resolution=res, augment=AUGMENT, params=params)
    assert out.params.affine, "the affine must not have been skipped here"
    for t in range(3):
        img = _denorm(out.images[t])
        for o in range(2):
            from_image = img[:, :, o] > 127
            from_mask = out.masks[t, o].numpy()
            # Bilinear (image) vs nearest (mask) may only disagree on the 1-px boundary band.
            band = cv2.dilate(from_mask.astype(np.uint8), np.ones((3, 3))) - cv2.erode(
                from_mask.astype(np.uint8), np.ones((3, 3))
            )
            diff = from_image != from_mask
            assert not np.any(diff & (band == 0)), (t, o)
            assert diff.sum() <= 0.1 * max(1, band.sum())
            assert from_mask.sum() > 0


def test_geometry_matrix_moves_a_pixel_where_expected() -> None:
    h, w, res = 40, 80, 80
    img = np.zeros((h, w, 3), np.uint8)
    img[10, 20] = 255
    params = ClipParams(flip=True, frame_jitter=[NEUTRAL])
    fwd = geometry_matrix(width=w, height=h, resolution=res, params=params, use_affine=False)
    m = pixel_matrix(fwd)
    # Flip: x -> w - 1 - x; resize: x * res / w, y * res / h (pixel centres).
    x, y = m @ np.array([20.0, 10.0, 1.0])
    assert x == pytest.approx((w - 1 - 20 + 0.5) * res / w - 0.5)
    assert y == pytest.approx((10 + 0.5) * res / h - 0.5)


def test_affine_skipped_when_it_would_erase_a_first_frame_object() -> None:
    h, w = 60, 60
    m = np.zeros((1, h, w), bool)
    m[0, 0:2, 0:2] = True  # a corner object that a 45 degree rotation throws out of frame
    params = ClipParams(angle=45.0, affine=True, frame_jitter=[NEUTRAL] * 2)
    img = _jpeg(np.full((h, w, 3), 100, np.uint8))
    out = transform_clip([img, img], [m, m], resolution=60, augment=AUGMENT, params=params)
    assert out.params.affine is False
    assert out.masks[0, 0].any()


def test_shapes_normalisation_and_determinism() -> None:
    h, w, res = 72, 128, 64
    grey = np.full((h, w, 3), 128, np.uint8)
    masks = [_blobs(h, w, 0)] * 4
    plain = transform_clip([grey] * 4, masks, resolution=res, augment=NO_AUGMENT)
    assert plain.images.shape == (4, 3, res, res) and plain.images.dtype == torch.float32
    assert plain.masks.shape == (4, 2, res, res) and plain.masks.dtype == torch.bool
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(plain.images[:, :, 5, 5], expected.expand(4, 3), atol=1e-5, rtol=0)
    a = transform_clip(
        [grey] * 4, masks, resolution=res, augment=AUGMENT, rng=np.random.default_rng(3)
    )
    b = transform_clip(
        [grey] * 4, masks, resolution=res, augment=AUGMENT, rng=np.random.default_rng(3)
    )
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    # The same geometry for every frame of the clip (same input frames -> same masks).
    assert all(torch.equal(a.masks[0], a.masks[t]) for t in range(4))


def test_reduced_decode_of_large_frames_keeps_geometry() -> None:
    """A frame 4x larger than the output decodes at 1/4 size; masks stay aligned."""
    h, w, res = 256, 512, 64
    m = np.zeros((1, h, w), bool)
    m[64:192, 128:384] = True
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[m[0]] = 255
    params = ClipParams(frame_jitter=[NEUTRAL])
    out = transform_clip([_jpeg(rgb)], [m], resolution=res, augment=AUGMENT, params=params)
    img = _denorm(out.images[0])[:, :, 0] > 127
    assert (img != out.masks[0, 0].numpy()).sum() <= 2 * res


def test_writes_into_a_given_batch_buffer() -> None:
    h, w, res = 32, 32, 32
    buf = torch.zeros((2, 3, 3, res, res))
    img = np.full((h, w, 3), 200, np.uint8)
    m = [np.ones((1, h, w), bool)] * 2
    out = transform_clip([img, img], m, resolution=res, augment=NO_AUGMENT, out_images=buf[:, 1])
    assert out.images.data_ptr() == buf[:, 1].data_ptr()
    assert buf[:, 1].abs().sum() > 0 and buf[:, 0].abs().sum() == 0 and buf[:, 2].abs().sum() == 0
