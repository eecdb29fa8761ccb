"""Frame extraction speed: kept frames/s of ``extract_dataset`` on a 1080p H.264 clip.

Baselines on the same clip, same kept frames (every 4th), JPEG quality 95:
  (a) Meta's flow: OpenCV VideoCapture decodes ALL frames into a list in memory, then
      cv2.imwrite writes every 4th (OpenCV's default quality is 95);
  (b) bare streaming PyAV decode (threaded) + Pillow q95 encode, one frame at a time.
Targets: >= 2x (a) and >= 0.95x (b).

Run: .venv/bin/python benchmarks/extract.py [--frames 144] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

EVERY = 4


def make_clip(path: str, *, frames: int, height: int = 1080, width: int = 1920) -> None:
    """A textured 1080p H.264 clip: a panning smooth texture with moving patterned blocks."""
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = rng.integers(40, 220, size=(height // 24 + 8, width // 24 + 8, 3), dtype=np.uint8)
    bg = np.asarray(
        Image.fromarray(coarse).resize((width + 4 * frames, height + 2 * frames), Image.BILINEAR)
    )
    tile = ((np.indices((160, 160)).sum(0) // 12) % 2 * 180 + 40).astype(np.uint8)[..., None]
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "crf": "20"}
        for t in range(frames):
            img = bg[2 * t : 2 * t + height, 4 * t : 4 * t + width].copy()
            for k in range(4):
                y, x = 100 + 200 * k, (300 * k + 12 * t) % (width - 160)
                img[y : y + 160, x : x + 160] = tile * np.array([1.0, 0.5 + 0.1 * k, 0.3])
            grain = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
            frame = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))


def meta_opencv(clip: str, out_dir: str) -> int:
    """(a) Decode the whole video into memory with OpenCV, then write every 4th frame."""
    import cv2

    cap = cv2.VideoCapture(clip)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    os.makedirs(out_dir, exist_ok=True)
    kept = frames[::EVERY]
    for i, frame in enumerate(kept):
        cv2.imwrite(os.path.join(out_dir, f"{i * EVERY:05d}.jpg"), frame)
    return len(kept)


def bare_pyav(clip: str, out_dir: str) -> int:
    """(b) Streaming PyAV decode (threaded) + Pillow q95 encode of every 4th frame."""
    import av

    os.makedirs(out_dir, exist_ok=True)
    kept = 0
    with av.open(clip) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for idx, frame in enumerate(container.decode(stream)):
            if idx % EVERY == 0:
                frame.to_image().save(os.path.join(out_dir, f"{idx:05d}.jpg"), quality=95)
                kept += 1
    return kept


def bare_pyav_ndarray(clip: str, out_dir: str) -> int:
    """(b') As (b) but converting through ``to_ndarray`` (faster than ``to_image``)."""
    import av
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    kept = 0
    with av.open(clip) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for idx, frame in enumerate(container.decode(stream)):
            if idx % EVERY == 0:
                img = Image.fromarray(frame.to_ndarray(format="rgb24"))
                img.save(os.path.join(out_dir, f"{idx:05d}.jpg"), quality=95)
                kept += 1
    return kept


def ours(src_dir: str, out_dir: str) -> int:
    from sam2_core.data.extract import extract_dataset

    summary = extract_dataset(src=src_dir, dst=out_dir, every=EVERY, workers=0, progress=False)
    assert not summary.failed, summary.failed
    return summary.frames


def measure(fn: Callable[[str, str], int], src: str, work: str, repeats: int) -> float:
    """Median kept frames/s over ``repeats`` runs (fresh output folder each time)."""
    rates = []
    for r in range(repeats):
        out = os.path.join(work, f"out-{fn.__name__}-{r}")
        t0 = time.perf_counter()
        n = fn(src, out)
        rates.append(n / (time.perf_counter() - t0))
        shutil.rmtree(out, ignore_errors=True)
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=144, help="clip length (24 fps)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-extract-")
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        clip = os.path.join(src, "clip.mp4")
        t0 = time.perf_counter()
        make_clip(clip, frames=args.frames)
        size_mb = os.path.getsize(clip) / 1e6
        print(
            f"clip: 1920x1080 H.264, {args.frames} frames, {size_mb:.1f} MB "
            f"({size_mb * 8 * 24 / args.frames:.1f} Mbit/s), made in {time.perf_counter() - t0:.1f} s"
        )
        r_meta = measure(meta_opencv, clip, work, args.repeats)
        r_bare = measure(bare_pyav, clip, work, args.repeats)
        r_nd = measure(bare_pyav_ndarray, clip, work, args.repeats)
        r_ours = measure(ours, src, work, args.repeats)
        print(f"(a)  Meta flow (OpenCV, all frames in memory):  {r_meta:7.1f} kept frames/s")
        print(f"(b)  bare streaming PyAV to_image + Pillow q95: {r_bare:7.1f} kept frames/s")
        print(f"(b') bare streaming PyAV to_ndarray + Pillow:   {r_nd:7.1f} kept frames/s")
        print(f"     sam2kf extract (extract_dataset):          {r_ours:7.1f} kept frames/s")
        print(f"ratio vs (a):  {r_ours / r_meta:.2f}x (target >= 2.0)")
        print(f"ratio vs (b):  {r_ours / r_bare:.2f}x (target >= 0.95)")
        print(f"ratio vs (b'): {r_ours / r_nd:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
