"""Built-in demo dataset in SA-V raw format: small H.264 mp4 files plus ``<vid>_manual.json``.

Every video shows textured objects on a textured, slowly panning background, made to be a fair
test of tracking (issue 18): within one video the objects differ in colour, texture *and* shape
(each takes a look and an outline no other object of that video has), so that a tracker can tell
them apart from what they look like, not only from where they were. They move (bouncing inside
the frame, so they cross), occlude each other (a fixed depth order per video), one leaves the
frame and comes back, and the last one appears late. Objects span a quarter to two fifths of the
shorter frame side, so at a training resolution of 256 px (a 16x16 memory map) each covers
several memory cells. Looks are shared templates with a little colour jitter, so similar-looking
instances occur *across* videos.

Masks are computed from exactly the pixels that were drawn, in depth order: an object's mask is
its shape minus the shapes of every object drawn above it. Annotations follow SA-V: one
``masklet`` entry per 4 video frames (entry ``i`` is frame ``4 * i``), COCO compressed RLE.

Everything is derived from ``seed``, so the output is identical on every run.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam2_core import storage
from sam2_core.data.readers.rle import encode_rle

#: Frame sizes ``(height, width)`` used in turn by the videos. Sides are even (yuv420p needs
#: that) but deliberately not multiples of 16.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = (
    (96, 160),
    (120, 208),
    (144, 176),
    (240, 320),
    (102, 182),
    (180, 240),
)

FPS = 24
ANN_EVERY = 4

#: Object looks shared by all videos: (pattern, colour A, colour B). Colour pairs and patterns
#: are all different, and a video never uses one look twice.
_TEMPLATES: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("checker", (220, 40, 40), (250, 220, 200)),
    ("stripes", (30, 70, 200), (240, 240, 90)),
    ("dots", (40, 200, 60), (20, 30, 20)),
    ("rings", (230, 130, 20), (70, 20, 100)),
    ("grid", (240, 240, 240), (200, 40, 200)),
    ("waves", (20, 200, 210), (90, 50, 20)),
)

#: Outlines; a video never uses one twice (at most 4 objects per video).
_SHAPES: tuple[str, ...] = ("ellipse", "notched", "triangle", "cross", "diamond")


@dataclass(frozen=True)
class DemoObject:
    """One object: shape patch, texture patch and trajectory (top-left corner per frame)."""

    shape: np.ndarray  # bool [h, w]
    texture: np.ndarray  # uint8 [h, w, 3]
    x0: float
    y0: float
    vx: float
    vy: float
    wobble: float
    appear: int  # first frame the object is drawn
    template: int
    # (y lo, y hi, x lo, x hi) of the top-left corner, bounced within; a range larger than the
    # frame lets the object leave it and come back
    bounds: tuple[float, float, float, float]

    def position(self, t: int) -> tuple[int, int]:
        """Integer top-left corner ``(y, x)`` at frame ``t`` (rigid motion keeps edges exact)."""
        x = self.x0 + self.vx * t
        y = self.y0 + self.vy * t + self.wobble * math.sin(t / 5.0)
        y_lo, y_hi, x_lo, x_hi = self.bounds
        y = y_lo + _reflect(y - y_lo, y_hi - y_lo)
        x = x_lo + _reflect(x - x_lo, x_hi - x_lo)
        return round(y), round(x)


def _reflect(v: float, hi: float) -> float:
    """Bounce a coordinate back and forth inside ``[0, hi]`` (a triangle wave)."""
    if hi <= 0:
        return 0.0
    v = abs(v) % (2 * hi)
    return 2 * hi - v if v > hi else v


def _pattern(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A float [h, w] in [0, 1] that mixes the template's two colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.integers(5, 9))
    if kind == "checker":
        return (((yy // period) + (xx // period)) % 2).astype(np.float32)
    if kind == "stripes":
        ang = rng.uniform(0, math.pi)
        return (np.sin((xx * math.cos(ang) + yy * math.sin(ang)) / period * math.pi) > 0).astype(
            np.float32
        )
    if kind == "dots":
        return ((np.hypot(yy % period - period / 2, xx % period - period / 2)) < period / 3).astype(
            np.float32
        )
    if kind == "grid":  # thin lines on a plain fill
        return ((yy % period < 2) | (xx % period < 2)).astype(np.float32)
    if kind == "waves":
        return (0.5 + 0.5 * np.sin(xx / period * math.pi + 2.0 * np.sin(yy / period))).astype(
            np.float32
        )
    r = np.hypot(yy - h / 2, xx - w / 2)
    return ((r // (period / 2)) % 2).astype(np.float32)


def _outline(kind: str, oh: int, ow: int) -> np.ndarray:
    """A bool [oh, ow] silhouette."""
    yy, xx = np.mgrid[0:oh, 0:ow].astype(np.float32)
    u = (yy - (oh - 1) / 2) / (oh / 2)  # [-1, 1] across the patch
    v = (xx - (ow - 1) / 2) / (ow / 2)
    if kind == "ellipse":
        return np.asarray(u**2 + v**2 <= 1.0)
    if kind == "triangle":  # apex up, base at the bottom
        return np.asarray(np.abs(v) <= (u + 1.0) / 2.0 + 0.05)
    if kind == "cross":
        return np.asarray((np.abs(u) <= 0.38) | (np.abs(v) <= 0.38))
    if kind == "diamond":
        return np.asarray(np.abs(u) + np.abs(v) <= 1.0)
    shape = np.ones((oh, ow), dtype=bool)  # rectangle with a notch: not convex
    shape[: oh // 3, : ow // 3] = False
    return shape


def _make_object(
    rng: np.random.Generator,
    *,
    h: int,
    w: int,
    num_frames: int,
    template: int,
    outline: str,
    late: bool,
    leaves: bool,
) -> DemoObject:
    kind, col_a, col_b = _TEMPLATES[template]
    side = min(h, w)
    oh = int(rng.integers(side // 4, int(side // 2.5) + 1))
    ow = int(rng.integers(side // 4, int(side // 2.5) + 1))
    shape = _outline(outline, oh, ow)
    jitter = rng.integers(-15, 16, size=3)
    a = np.clip(np.array(col_a) + jitter, 0, 255).astype(np.float32)
    b = np.clip(np.array(col_b) + jitter, 0, 255).astype(np.float32)
    mix = _pattern(kind, oh, ow, rng)[..., None]
    texture = (a * mix + b * (1.0 - mix)).astype(np.uint8)
    # Objects bounce around inside the frame (so they cross and occlude each other), except
    # the one that bounces within a range reaching well outside it: it leaves and comes back.
    travel = rng.uniform(2.0, 2.6) if leaves else rng.uniform(0.6, 1.2)
    speed = travel * side / max(num_frames, 1)
    ang = rng.uniform(0, 2 * math.pi)
    if leaves:  # mostly horizontal, so it crosses the left or right edge
        ang = rng.choice([0.0, math.pi]) + rng.uniform(-0.4, 0.4)
    appear = int(rng.integers(num_frames // 4, num_frames // 2 + 1)) if late else 0
    if leaves:
        bounds = (0.0, float(h - oh), -1.6 * ow, float(w) + 0.6 * ow)
    else:
        bounds = (0.0, float(h - oh), 0.0, float(w - ow))
    return DemoObject(
        shape=shape,
        texture=texture,
        x0=float(rng.uniform(0, max(w - ow, 1))),
        y0=float(rng.uniform(0, max(h - oh, 1))),
        vx=speed * math.cos(ang),
        vy=speed * math.sin(ang),
        wobble=float(rng.uniform(0, side / 12)),
        appear=appear,
        template=template,
        bounds=bounds,
    )


def _background(rng: np.random.Generator, h: int, w: int, num_frames: int) -> np.ndarray:
    """A smooth, textured canvas larger than the frame (the camera pans across it)."""
    from PIL import Image

    bh, bw = h + num_frames, w + num_frames
    coarse = rng.integers(60, 200, size=(max(bh // 16, 2), max(bw // 16, 2), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((bw, bh), Image.Resampling.BILINEAR))
    grain = rng.integers(-12, 13, size=(bh, bw, 1))
    return np.clip(smooth.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def _paste(dst: np.ndarray, patch: np.ndarray, y: int, x: int) -> tuple[slice, slice, slice, slice]:
    """Clip a patch placed at (y, x) to ``dst``: returns (dst rows, dst cols, patch rows, cols)."""
    h, w = dst.shape[:2]
    ph, pw = patch.shape[:2]
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + ph, h), min(x + pw, w)
    if y1 <= y0 or x1 <= x0:
        return slice(0, 0), slice(0, 0), slice(0, 0), slice(0, 0)
    return slice(y0, y1), slice(x0, x1), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)


def render_demo_video(
    index: int, *, num_frames: int, seed: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Render one demo video.

    Returns:
        frames: ``uint8 [T, H, W, 3]`` RGB.
        masks: ``bool [T, O, H, W]`` visible pixels of each object (depth order respected:
            objects later in the list are drawn on top).
    """
    h, w = size
    rng = np.random.default_rng([seed, index])
    num_objects = int(rng.integers(2, 5))
    # distinct looks and outlines within the video
    templates = [int(t) for t in rng.choice(len(_TEMPLATES), size=num_objects, replace=False)]
    outlines = [_SHAPES[int(s)] for s in rng.choice(len(_SHAPES), size=num_objects, replace=False)]
    objects = [
        _make_object(
            rng,
            h=h,
            w=w,
            num_frames=num_frames,
            template=t,
            outline=outlines[i],
            late=(i == num_objects - 1 and i > 0),
            leaves=(i == 1),
        )
        for i, t in enumerate(templates)
    ]
    bg = _background(rng, h, w, num_frames)
    pan_y, pan_x = rng.uniform(0, 1, size=2)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, num_objects, h, w), dtype=bool)
    for t in range(num_frames):
        oy, ox = int(pan_y * t), int(pan_x * t)
        frame = bg[oy : oy + h, ox : ox + w].copy()
        full = np.zeros((num_objects, h, w), dtype=bool)
        for k, obj in enumerate(objects):  # bottom to top
            if t < obj.appear:
                continue
            y, x = obj.position(t)
            dy, dx, py, px = _paste(frame, obj.shape, y, x)
            shape = obj.shape[py, px]
            frame[dy, dx][shape] = obj.texture[py, px][shape]
            full[k, dy, dx] = shape
        covered = np.zeros((h, w), dtype=bool)
        for k in range(num_objects - 1, -1, -1):  # top to bottom: subtract what lies above
            masks[t, k] = full[k] & ~covered
            covered |= full[k]
        frames[t] = frame
    return frames, masks


def encode_mp4(
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    fps: int = FPS,
    crf: int = 18,
    preset: str = "veryfast",
    faststart: bool = False,
) -> bytes:
    """Encode RGB frames (``uint8 [T, H, W, 3]`` or a list of ``[H, W, 3]``) as H.264
    (libx264, yuv420p) in an mp4.

    ``faststart`` puts the index (moov atom) before the frames, as streaming sites do.
    """
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"frame size {h}x{w}: H.264 yuv420p needs even height and width")
    if faststart:  # the muxer rewrites the file in a second pass: needs a real file
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "v.mp4")
            opts = {"movflags": "faststart"}
            _encode_to(path, frames, fps=fps, crf=crf, preset=preset, options=opts)
            with open(path, "rb") as f:
                return f.read()
    buf = io.BytesIO()
    _encode_to(buf, frames, fps=fps, crf=crf, preset=preset, options={})
    return buf.getvalue()


def _encode_to(
    target: Any,
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    fps: int,
    crf: int,
    preset: str,
    options: dict[str, str],
) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(target, "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One encoder thread, and no macroblock-tree rate control: with mbtree on, x264's
        # output was seen to vary between runs in one process (while other threads ran).
        stream.codec_context.options = {
            "preset": preset,
            "crf": str(crf),
            "threads": "1",
            "x264-params": "mbtree=0",
        }
        prev: np.ndarray | None = None
        frame: Any = None
        for img in frames:
            if img is not prev:  # a repeated array (still video) is converted once
                rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame, prev = rgb.reformat(format="yuv420p"), img
            frame.pts = None  # let PyAV number the frames (a reused frame keeps its old pts)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _bucket(area: float) -> str:
    return "small" if area < 32**2 else ("medium" if area < 96**2 else "large")


def sav_annotation(
    video_id: str, masks: np.ndarray, *, fps: int = FPS, ann_every: int = ANN_EVERY
) -> dict[str, Any]:
    """SA-V ``_manual.json`` content for ``masks`` ``bool [T, O, H, W]`` (every ``ann_every``-th frame)."""
    t, o, h, w = masks.shape
    ann = masks[::ann_every]  # [A, O, H, W]
    masklet = [[encode_rle(ann[a, k]) for k in range(o)] for a in range(ann.shape[0])]
    areas = ann.reshape(ann.shape[0], o, -1).sum(-1).astype(np.float64)  # [A, O]
    visible = areas > 0
    first = [float(np.argmax(visible[:, k])) if visible[:, k].any() else 0.0 for k in range(o)]
    mean_area = [
        float(areas[visible[:, k], k].mean()) if visible[:, k].any() else 0.0 for k in range(o)
    ]
    changes = [int(np.count_nonzero(np.diff(visible[:, k].astype(np.int8)))) for k in range(o)]
    return {
        "video_id": video_id,
        "video_duration": t / fps,
        "video_frame_count": float(t),
        "video_height": float(h),
        "video_width": float(w),
        "video_resolution": float(h * w),
        "video_environment": "Indoor",
        "video_split": "train",
        "masklet": masklet,
        "masklet_id": list(range(o)),
        "masklet_size_rel": [a / (h * w) for a in mean_area],
        "masklet_size_abs": mean_area,
        "masklet_size_bucket": [_bucket(a) for a in mean_area],
        "masklet_visibility_changes": changes,
        "masklet_first_appeared_frame": first,
        "masklet_frame_count": [len(masklet)] * o,
        "masklet_edited_frame_count": [0] * o,
        "masklet_type": ["manual"] * o,
        "masklet_stability_score": [None] * o,
        "masklet_num": o,
    }


def write_demo_dataset(
    *,
    dst: str,
    num_videos: int = 6,
    num_frames: int = 48,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
) -> list[str]:
    """Write ``num_videos`` demo videos as ``DST/<vid>.mp4`` + ``DST/<vid>_manual.json``.

    ``sizes`` are ``(height, width)`` pairs (even), used in turn. Any fsspec URL works as ``dst``.
    Returns the video ids in order. Takes about a second for the defaults.
    """
    if num_videos < 1 or num_frames < 1:
        raise ValueError("num_videos and num_frames must be at least 1")
    if not sizes:
        raise ValueError("sizes must name at least one (height, width)")
    ids = []
    for i in range(num_videos):
        vid = f"demo_{i:03d}"
        h, w = sizes[i % len(sizes)]
        write_demo_video(
            dst=dst, video_id=vid, index=i, num_frames=num_frames, seed=seed, size=(int(h), int(w))
        )
        ids.append(vid)
    return ids


def write_demo_video(
    *,
    dst: str,
    video_id: str,
    index: int,
    num_frames: int,
    seed: int,
    size: tuple[int, int],
    faststart: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Write demo video ``index`` (see :func:`render_demo_video`) as ``DST/<video_id>.mp4`` +
    ``DST/<video_id>_manual.json`` (``faststart`` as in :func:`encode_mp4`).

    Returns:
        frames ``uint8 [T, H, W, 3]``, masks ``bool [T, O, H, W]`` and the annotation written.
    """
    frames, masks = render_demo_video(index, num_frames=num_frames, seed=seed, size=size)
    ann = sav_annotation(video_id, masks)
    mp4 = encode_mp4(frames, faststart=faststart)
    storage.write_bytes_atomic(storage.join(dst, f"{video_id}.mp4"), mp4)
    storage.write_json_atomic(storage.join(dst, f"{video_id}_manual.json"), ann, indent=None)
    return frames, masks, ann
