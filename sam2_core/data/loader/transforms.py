"""The official SAM 2.1 MOSE training augmentations, consistent across the frames of a clip, fast.

Order and distributions follow Meta's ``vos.train_transforms``: horizontal flip (p 0.5, same for
all frames); affine with rotation U(-25, 25) deg and x-shear U(-20, 20) deg about the image
centre, fill (123, 116, 103), skipped when it would empty an object's mask on the first frame;
square resize to ``resolution``; colour jitter shared by all frames (brightness 0.1, contrast
0.03, saturation 0.03, random order); grayscale (p 0.05, all frames); per-frame colour jitter
(0.1, 0.05, 0.05); ImageNet normalisation.

Speed (the official code runs about 11 frames/s per process at 1024 px; this runs several times
faster on the same core):

* flip, affine and resize are composed into ONE 2x3 matrix and every frame is warped once,
  straight to ``resolution x resolution`` (bilinear for images, nearest for masks, so mask
  labels never blend). JPEGs are decoded with ``cv2.imdecode``, at 1/2, 1/4 or 1/8 scale when
  that still exceeds the output size (the matrix absorbs the scale).
* all masks of a frame are bit-packed into one ``uint8`` plane per 8 objects, so one nearest
  warp moves up to 8 objects at once.
* each colour jitter is an affine map of RGB (brightness scales, contrast blends with the mean
  grey level, saturation blends with the per-pixel grey), so a whole jitter group (in its random
  order, plus grayscale and the BGR->RGB swap) is one 3x4 matrix applied by ``cv2.transform`` on
  ``uint8``, which rounds and clamps like the official PIL pipeline does after the group. The
  official clamps after every single operation; the difference is limited to saturated pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from sam2_core.data.loader.config import AugmentConfig
from sam2_core.data.readers.records import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: colour of the pixels the affine brings in from outside the frame (RGB, the official value)
AFFINE_FILL = (123, 116, 103)
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float64)
#: BGR (as decoded by OpenCV) -> RGB, as a matrix so it folds into the first colour transform.
_BGR_TO_RGB = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)


@dataclass
class ClipParams:
    """Random draws for one clip (shared by all frames unless per frame)."""

    flip: bool = False
    angle: float = 0.0
    shear: float = 0.0
    affine: bool = False
    shared_jitter: tuple[tuple[float, float, float], tuple[int, ...]] = ((1, 1, 1), (0, 1, 2))
    grayscale: bool = False
    frame_jitter: list[tuple[tuple[float, float, float], tuple[int, ...]]] = field(
        default_factory=list
    )


@dataclass
class TransformedClip:
    """Output of :func:`transform_clip`.

    Attributes:
        images: float32 ``[T, 3, R, R]``, ImageNet-normalised RGB.
        masks: bool ``[T, O, R, R]``.
        params: the random draws used (``affine`` False when it was skipped).
    """

    images: torch.Tensor
    masks: torch.Tensor
    params: ClipParams


def _jitter_draw(
    rng: np.random.Generator, b: float, c: float, s: float
) -> tuple[tuple[float, float, float], tuple[int, ...]]:
    factors = (
        float(rng.uniform(max(0.0, 1 - b), 1 + b)) if b > 0 else 1.0,
        float(rng.uniform(max(0.0, 1 - c), 1 + c)) if c > 0 else 1.0,
        float(rng.uniform(max(0.0, 1 - s), 1 + s)) if s > 0 else 1.0,
    )
    order = tuple(int(i) for i in rng.permutation(3))
    return factors, order


def sample_params(cfg: AugmentConfig, num_frames: int, rng: np.random.Generator) -> ClipParams:
    """Draw every random choice of a clip (the same draws for the same generator state)."""
    p = ClipParams()
    p.flip = bool(rng.random() < cfg.hflip_prob)
    p.angle = float(rng.uniform(-cfg.degrees, cfg.degrees)) if cfg.degrees > 0 else 0.0
    p.shear = float(rng.uniform(-cfg.shear, cfg.shear)) if cfg.shear > 0 else 0.0
    p.affine = cfg.degrees > 0 or cfg.shear > 0
    p.shared_jitter = _jitter_draw(rng, cfg.brightness, cfg.contrast, cfg.saturation)
    p.grayscale = bool(rng.random() < cfg.grayscale_prob)
    p.frame_jitter = [
        _jitter_draw(rng, cfg.frame_brightness, cfg.frame_contrast, cfg.frame_saturation)
        for _ in range(num_frames)
    ]
    return p


# ----------------------------------------------------------------------------- geometry


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


def geometry_matrix(
    *, width: int, height: int, resolution: int, params: ClipParams, use_affine: bool
) -> np.ndarray:
    """Forward map ``3x3`` from continuous source coordinates to continuous output coordinates.

    Continuous coordinates put pixel ``i`` at ``[i, i+1)``; the map is flip, then rotation and
    x-shear about the image centre, then the square resize.
    """
    m = np.eye(3)
    if params.flip:
        m = np.array([[-1, 0, width], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ m
    if use_affine and params.affine:
        th = math.radians(params.angle)
        sh = math.radians(params.shear)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        shear = np.array([[1.0, math.tan(sh)], [0.0, 1.0]])
        a = np.eye(3)
        a[:2, :2] = rot @ shear
        cx, cy = width / 2.0, height / 2.0
        m = _translate(cx, cy) @ a @ _translate(-cx, -cy) @ m
    scale = np.diag([resolution / width, resolution / height, 1.0])
    return scale @ m


def pixel_matrix(forward: np.ndarray, *, source_scale: float = 1.0) -> np.ndarray:
    """``2x3`` float32 matrix for ``cv2.warpAffine`` (pixel centres at integers).

    ``source_scale`` is how many original pixels one pixel of the source array covers (2 for
    a JPEG decoded at half size).
    """
    m = _translate(-0.5, -0.5) @ forward @ np.diag([source_scale, source_scale, 1.0])
    m = m @ _translate(0.5, 0.5)
    return m[:2].astype(np.float32)


# ----------------------------------------------------------------------------- colour


def _jitter_affine(
    a: np.ndarray,
    t: np.ndarray,
    mean_rgb: np.ndarray,
    jitter: tuple[tuple[float, float, float], tuple[int, ...]],
) -> tuple[np.ndarray, np.ndarray]:
    """Compose a brightness/contrast/saturation group (random order) onto ``x -> a x + t``."""
    (fb, fc, fs), order = jitter
    for op in order:
        if op == 0:  # brightness: blend with black
            a, t = fb * a, fb * t
        elif op == 1:  # contrast: blend with the image's mean grey level
            m = float(_GRAY @ (a @ mean_rgb + t))
            a, t = fc * a, fc * t + (1 - fc) * m
        else:  # saturation: blend with the per-pixel grey level
            s = fs * np.eye(3) + (1 - fs) * np.outer(np.ones(3), _GRAY)
            a, t = s @ a, s @ t
    return a, t


def _as_cv_matrix(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([a, t[:, None]], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- masks


def _pack_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    """``O`` bool planes ``[h, w]`` -> uint8 ``[h, w, ceil(O/8)]``, object ``o`` in bit ``o % 8``."""
    groups = [masks[i : i + 8] for i in range(0, len(masks), 8)]
    planes = []
    for group in groups:
        plane: np.ndarray = np.array(group[0].view(np.uint8))
        for bit, m in enumerate(group[1:], start=1):
            # plane + 2**bit * m in one saturating pass (exact: the bits never overlap).
            plane = cv2.scaleAdd(m.view(np.uint8), float(1 << bit), plane)
        planes.append(plane)
    return np.stack(planes, axis=2) if len(planes) > 1 else planes[0][:, :, None]


def _move_masks(
    masks: np.ndarray, m: np.ndarray, size: int, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Warp bool ``[O, H, W]`` masks with the 2x3 matrix ``m`` into bool ``[O, size, size]``.

    pycocotools decodes masks column-major; those are packed as they lie in memory (transposed
    planes) and warped with the source axes swapped in the matrix, which avoids a transpose.
    ``out`` (bool ``[O, size, size]``, C-contiguous) receives the result when given.
    """
    num = masks.shape[0]
    if out is None:
        out = np.empty((num, size, size), dtype=bool)
    if num == 0:
        return out
    planes = [np.asarray(masks[i], dtype=bool) for i in range(num)]
    if all(p.flags.f_contiguous and not p.flags.c_contiguous for p in planes):
        _warp_masks(_pack_masks([p.T for p in planes]), m[:, [1, 0, 2]], size, out)
    else:
        planes = [np.ascontiguousarray(p) for p in planes]
        _warp_masks(_pack_masks(planes), m, size, out)
    return out


#: ``_BIT_LUT[k][v]`` is bit ``k`` of ``v`` (0 or 1, a valid ``bool`` byte).
_BIT_LUT = [((np.arange(256) >> k) & 1).astype(np.uint8) for k in range(8)]


def _warp_masks(packed: np.ndarray, m: np.ndarray, size: int, out: np.ndarray) -> None:
    """Nearest-neighbour warp of packed masks into bool ``out [O, size, size]``."""
    out_u8 = out.view(np.uint8)
    num_objects = out.shape[0]
    # cv2 warps up to 4 channels per call; 4 channels hold 32 objects.
    for c0 in range(0, packed.shape[2], 4):
        chunk = np.ascontiguousarray(packed[:, :, c0 : c0 + 4])
        warped = cv2.warpAffine(chunk, m, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
        if warped.ndim == 2:
            warped = warped[:, :, None]
        for c in range(warped.shape[2]):
            plane = np.ascontiguousarray(warped[:, :, c])
            for bit in range(8):
                i = (c0 + c) * 8 + bit
                if i >= num_objects:
                    break
                # One table look-up per object writes 0/1 bytes straight into the bool output.
                cv2.LUT(plane, _BIT_LUT[bit], dst=out_u8[i])


# ----------------------------------------------------------------------------- decode


def reduced_decode_flag(orig_hw: tuple[int, int], min_hw: tuple[int, int]) -> int:
    """The cheapest ``cv2.imdecode`` flag whose output stays at least ``min_hw`` (libjpeg's DCT
    scaling to 1/2, 1/4 or 1/8 costs far less than decoding fully and resizing)."""
    h, w = orig_hw
    for k, flag in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    ):
        if h // k >= min_hw[0] and w // k >= min_hw[1]:
            return int(flag)
    return int(cv2.IMREAD_COLOR)


def decode_jpeg(data: bytes, *, flag: int = cv2.IMREAD_COLOR, source: str = "") -> np.ndarray:
    """Decode JPEG/PNG bytes to BGR ``uint8 [h, w, 3]`` (``flag`` may ask for a reduced size)."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if img is None:
        raise DataError(f"cannot decode image {source or '(bytes)'}: not a valid JPEG/PNG")
    return img


@dataclass(frozen=True)
class DecodedImage:
    """A frame decoded ahead of :func:`transform_clip` (on a read-ahead thread): BGR ``uint8
    [h, w, 3]``, possibly DCT-reduced, and the size of its encoded bytes."""

    bgr: np.ndarray
    encoded_bytes: int


def decode_images(
    images: Sequence[bytes], *, orig_hw: tuple[int, int], resolution: int, source: str = ""
) -> list[DecodedImage]:
    """Decode a clip's JPEGs as :func:`transform_clip` would (same reduced-decode flag), so
    the decode can run on another thread than the augmentation. OpenCV releases the GIL while
    decoding, so this overlaps the transform of the previous clip."""
    flag = reduced_decode_flag(orig_hw, (resolution, resolution))
    return [
        DecodedImage(decode_jpeg(b, flag=flag, source=f"{source} frame {i}"), len(b))
        for i, b in enumerate(images)
    ]


def encoded_size(image: bytes | np.ndarray | DecodedImage) -> int:
    """Bytes of a frame as read from storage (encoded size; arrays count their pixels)."""
    if isinstance(image, DecodedImage):
        return image.encoded_bytes
    if isinstance(image, np.ndarray):
        return int(image.nbytes)
    return len(image)


# ----------------------------------------------------------------------------- clip


def _frame_masks(masks: Sequence[np.ndarray], t: int, h: int, w: int) -> np.ndarray:
    m = np.asarray(masks[t])
    if m.ndim != 3 or m.shape[1:] != (h, w):
        raise DataError(f"mask stack of frame {t} has shape {m.shape}, expected [O, {h}, {w}]")
    return m


def transform_clip(
    images: Sequence[bytes | np.ndarray | DecodedImage],
    masks: Sequence[np.ndarray],
    *,
    resolution: int,
    augment: AugmentConfig,
    rng: np.random.Generator | None = None,
    params: ClipParams | None = None,
    out_images: torch.Tensor | None = None,
    out_masks: torch.Tensor | None = None,
) -> TransformedClip:
    """Augment one clip consistently across its frames.

    Args:
        images: ``T`` encoded JPEGs (bytes, decoded here), RGB ``uint8 [H, W, 3]`` arrays, or
            :class:`DecodedImage` frames from :func:`decode_images`.
        masks: ``T`` bool arrays ``[O, H, W]`` at the original frame size (same O every frame).
        resolution: side ``R`` of the square output.
        augment: the augmentation recipe; with ``enabled`` False only the square resize and
            the normalisation are applied (evaluation).
        rng: random generator (required when augmenting and ``params`` is None).
        params: explicit draws (tests); otherwise drawn from ``rng``.
        out_images: optional float32 ``[T, 3, R, R]`` tensor to write into (for example a slice
            ``batch[:, b]`` of a batch buffer in shared memory, which saves a copy per frame).
        out_masks: optional bool ``[T, O, R, R]`` contiguous tensor to write the masks into.

    Returns:
        :class:`TransformedClip` with ``images [T, 3, R, R]`` float32 and ``masks [T, O, R, R]``.
    """
    num_t = len(images)
    if num_t == 0 or len(masks) != num_t:
        raise DataError(f"clip needs >= 1 frame and one mask stack per frame ({num_t} frames)")
    res = resolution
    train = augment.enabled
    if params is None:
        if train:
            if rng is None:
                raise ValueError("transform_clip with augmentation enabled needs rng or params")
            params = sample_params(augment, num_t, rng)
        else:
            params = ClipParams(frame_jitter=[((1.0, 1.0, 1.0), (0, 1, 2))] * num_t)
    num_obj = int(np.asarray(masks[0]).shape[0])

    h, w = (int(x) for x in np.asarray(masks[0]).shape[1:3])
    flag = reduced_decode_flag((h, w), (res, res))
    if out_images is None:
        out_images = torch.empty((num_t, 3, res, res), dtype=torch.float32)
    if tuple(out_images.shape) != (num_t, 3, res, res) or out_images.dtype != torch.float32:
        raise ValueError(f"out_images must be float32 [{num_t}, 3, {res}, {res}]")
    if out_masks is None:
        out_masks = torch.empty((num_t, num_obj, res, res), dtype=torch.bool)
    if (
        tuple(out_masks.shape) != (num_t, num_obj, res, res)
        or out_masks.dtype != torch.bool
        or not out_masks.is_contiguous()
    ):
        raise ValueError(f"out_masks must be contiguous bool [{num_t}, {num_obj}, {res}, {res}]")
    mask_np = out_masks.numpy()  # a view: cv2 writes straight into the tensor's memory

    use_affine = train and params.affine
    fwd = geometry_matrix(width=w, height=h, resolution=res, params=params, use_affine=use_affine)
    m_mask = pixel_matrix(fwd)
    first_masks = _frame_masks(masks, 0, h, w)
    _move_masks(first_masks, m_mask, res, out=mask_np[0])
    if use_affine:
        had = first_masks.any(axis=(1, 2))  # no copy of column-major planes
        now = mask_np[0].any(axis=(1, 2))
        if bool(np.any(had & ~now)):
            # Like the official RandomAffine: never let the affine erase a first-frame object.
            use_affine = False
            params.affine = False
            fwd = geometry_matrix(
                width=w, height=h, resolution=res, params=params, use_affine=False
            )
            m_mask = pixel_matrix(fwd)
            _move_masks(first_masks, m_mask, res, out=mask_np[0])

    frames = _FrameBuffers(res)
    fill_bgra = (AFFINE_FILL[2], AFFINE_FILL[1], AFFINE_FILL[0], 0)
    scale = np.array(IMAGENET_STD, dtype=np.float64) * 255.0
    offset = np.array(IMAGENET_MEAN, dtype=np.float64) * 255.0
    out_np = out_images.numpy()  # a view: cv2 writes straight into the tensor's memory
    for t in range(num_t):
        img = _decode(images[t], flag)
        if t > 0:
            _move_masks(_frame_masks(masks, t, h, w), m_mask, res, out=mask_np[t])
        src_scale = w / img.shape[1]
        # 4-channel uint8 is OpenCV's fastest warp path (about 1.5x the 3-channel one); the
        # conversion costs far less than it saves.
        cv2.cvtColor(img, cv2.COLOR_BGR2BGRA, dst=frames.src4(img.shape[:2]))
        cv2.warpAffine(
            frames.source4,
            pixel_matrix(fwd, source_scale=src_scale),
            (res, res),
            dst=frames.warped4,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=fill_bgra,
        )
        cv2.cvtColor(frames.warped4, cv2.COLOR_BGRA2BGR, dst=frames.warped3)
        rgb = _colour(frames, params, t, train)
        cv2.split(rgb, frames.planes)
        for c, plane in enumerate(frames.planes):
            # (x - mean) / std straight into the output tensor's memory.
            cv2.addWeighted(
                plane,
                1.0 / scale[c],
                plane,
                0.0,
                -offset[c] / scale[c],
                dst=out_np[t, c],
                dtype=cv2.CV_32F,
            )
    return TransformedClip(images=out_images, masks=out_masks, params=params)


class _FrameBuffers:
    """Scratch images reused by every frame of a clip (no allocation per frame)."""

    def __init__(self, res: int) -> None:
        self.warped4 = np.empty((res, res, 4), dtype=np.uint8)
        self.warped3 = np.empty((res, res, 3), dtype=np.uint8)
        self.rgb = np.empty((res, res, 3), dtype=np.uint8)
        self.rgb2 = np.empty((res, res, 3), dtype=np.uint8)
        self.planes = [np.empty((res, res), dtype=np.uint8) for _ in range(3)]
        self.source4 = np.empty((0, 0, 4), dtype=np.uint8)

    def src4(self, hw: tuple[int, ...]) -> np.ndarray:
        if self.source4.shape[:2] != tuple(hw):
            self.source4 = np.empty((hw[0], hw[1], 4), dtype=np.uint8)
        return self.source4


def _decode(image: bytes | np.ndarray | DecodedImage, flag: int) -> np.ndarray:
    """BGR uint8 ``[h, w, 3]`` from JPEG bytes (reduced decode when big), a frame decoded
    ahead, or an RGB array."""
    if isinstance(image, DecodedImage):
        return image.bgr
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_jpeg(bytes(image), flag=flag)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DataError(f"image array must be uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr[:, :, ::-1])


def _colour(frames: _FrameBuffers, params: ClipParams, t: int, train: bool) -> np.ndarray:
    """Shared jitter (+ grayscale) then per-frame jitter of ``frames.warped3`` (BGR); returns
    RGB uint8 ``[R, R, 3]`` (one of the frame buffers)."""
    warped_bgr = frames.warped3
    if not train:
        return cv2.cvtColor(warped_bgr, cv2.COLOR_BGR2RGB, dst=frames.rgb)
    a = _BGR_TO_RGB.copy()
    off = np.zeros(3)
    mean_bgr = np.array(cv2.mean(warped_bgr)[:3], dtype=np.float64)
    a, off = _jitter_affine(a, off, mean_bgr, params.shared_jitter)
    if params.grayscale:
        g = np.outer(np.ones(3), _GRAY)
        a, off = g @ a, g @ off
    rgb = cv2.transform(warped_bgr, _as_cv_matrix(a, off), dst=frames.rgb)
    mean_rgb = np.array(cv2.mean(rgb)[:3], dtype=np.float64)
    a2, off2 = _jitter_affine(np.eye(3), np.zeros(3), mean_rgb, params.frame_jitter[t])
    return cv2.transform(rgb, _as_cv_matrix(a2, off2), dst=frames.rgb2)
