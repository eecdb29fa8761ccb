"""Frame extraction speed: kept frames/s of ``extract_dataset`` on a 1080p H.264 clip.

Baselines on the same clip, same kept frames (every 4th), JPEG quality 95:
  (a) Meta's flow: OpenCV VideoCapture decodes ALL frames into a list in memory, then
      cv2.imwrite writes every 4th (OpenCV's default quality is 95);
  (b) bare streaming PyAV decode (threaded) + Pillow q95 encode, one frame at a time.
Targets: >= 2x (a) and >= 0.95x (b).

Run: .venv/bin/python benchmarks/extract.py [--frames 96] [--repeats 3]
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


def make_clip(
    path: str, *, frames: int, height: int = 1080, width: int = 1920, bitrate: int | None = None
) -> None:
    """A textured H.264 clip (1080p by default): a panning smooth texture with moving patterned
    blocks. ``bitrate`` (bit/s): encode at that average rate instead of constant quality
    (crf 20), to match a dataset's bitrate."""
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
        if bitrate:
            stream.bit_rate = bitrate
            stream.codec_context.options = {"preset": "veryfast"}
        else:
            stream.codec_context.options = {"preset": "veryfast", "crf": "20"}
        grains = [rng.integers(0, 13, size=(height, width, 1), dtype=np.uint8) for _ in range(5)]
        for t in range(frames):
            img = bg[2 * t : 2 * t + height, 4 * t : 4 * t + width].copy()
            for k in range(4):
                y, x = (100 + 200 * k) % (height - 160), (300 * k + 12 * t) % (width - 160)
                img[y : y + 160, x : x + 160] = tile * np.array([1.0, 0.5 + 0.1 * k, 0.3])
            # Sensor-like grain (different each frame) keeps the bitrate realistic.
            frame = np.clip(img, 6, 243) + grains[t % len(grains)] - 6
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


def _pyav_every(clip: str, out_dir: str, *, via_ndarray: bool) -> int:
    """Streaming PyAV decode (threaded) + Pillow q95 encode of every ``EVERY``-th frame, the
    frame converted by ``to_ndarray`` + ``Image.fromarray`` or by ``to_image``."""
    import av
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    kept = 0
    with av.open(clip) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for idx, frame in enumerate(container.decode(stream)):
            if idx % EVERY == 0:
                if via_ndarray:
                    img = Image.fromarray(frame.to_ndarray(format="rgb24"))
                else:
                    img = frame.to_image()
                img.save(os.path.join(out_dir, f"{idx:05d}.jpg"), quality=95)
                kept += 1
    return kept


def bare_pyav(clip: str, out_dir: str) -> int:
    """(b) Streaming PyAV decode (threaded) + Pillow q95 encode of every 4th frame."""
    return _pyav_every(clip, out_dir, via_ndarray=False)


def bare_pyav_ndarray(clip: str, out_dir: str) -> int:
    """(b') As (b) but converting through ``to_ndarray`` (faster than ``to_image``)."""
    return _pyav_every(clip, out_dir, via_ndarray=True)


def ours(src_dir: str, out_dir: str) -> int:
    from sam2_core.data.prep.extract import extract_dataset

    summary = extract_dataset(src=src_dir, dst=out_dir, every=EVERY, workers=0, progress=False)
    assert not summary.failed, summary.failed
    return summary.frames


def run_once(fn: Callable[[str, str], int], src: str, work: str) -> tuple[float, float]:
    """``(kept frames per wall second, kept frames per CPU second)`` of one run."""
    out = os.path.join(work, f"out-{fn.__name__}")
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn(src, out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(out, ignore_errors=True)
    return n / wall, n / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=96, help="clip length (24 fps)")
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
        methods = {
            "(a)  Meta flow (OpenCV, all frames in memory) ": (meta_opencv, clip),
            "(b)  bare streaming PyAV to_image + Pillow q95": (bare_pyav, clip),
            "(b') bare streaming PyAV to_ndarray + Pillow  ": (bare_pyav_ndarray, clip),
            "     sam2kf extract (extract_dataset)         ": (ours, src),
        }
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
        for _ in range(args.repeats):  # interleaved, so load changes hit every method alike
            for name, (fn, arg) in methods.items():
                runs[name].append(run_once(fn, arg, work))
        wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
        cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
        print(
            f"median of {args.repeats} interleaved runs; kept frames (every {EVERY}th) per second"
        )
        for name in methods:
            print(f"{name}: {wall[name]:6.1f} /s wall   {cpu[name]:6.1f} /s of CPU time")
        names = list(methods)
        for label, ref, target in (
            ("(a)", names[0], 2.0),
            ("(b)", names[1], 0.95),
            ("(b')", names[2], None),
        ):
            goal = f" (target >= {target})" if target else ""
            print(
                f"ratio vs {label:4s}: {wall[names[3]] / wall[ref]:.2f}x wall, "
                f"{cpu[names[3]] / cpu[ref]:.2f}x CPU{goal}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
