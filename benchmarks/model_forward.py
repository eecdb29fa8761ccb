"""Throughput of the SAM 2.1 model: image-encoder images/s and video-tracking frames/s.

Usage::

    .venv/bin/python benchmarks/model_forward.py                    # tiny + sam2.1_hiera_t, 1024 px
    .venv/bin/python benchmarks/model_forward.py --models sam2.1_hiera_b+ --frames 16
    .venv/bin/python benchmarks/model_forward.py --device cuda --compile --json out.json

CPU runs in float32; CUDA runs under bf16 autocast (``--dtype fp32`` to compare). Random
weights (no checkpoint needed: speed does not depend on the values). Tracking goes through
``VideoPredictor``: a synthetic clip with two objects, both prompted with a mask on frame 0,
propagated forward; the rate counts frames (all objects of a frame), image encoding included.
Peak memory is the CUDA allocator peak on GPU and the process peak RSS on CPU (reset per phase
where the kernel allows it).

There is no CPU baseline in the issue; the script prints the ratio tracking/encoder (how much
the memory path costs on top of the encoder) and, on CUDA, the ratio to the frames/s that
Meta's README reports for the released models (A100, bf16, compiled image encoder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

#: Video FPS in Meta's SAM 2.1 README (A100, torch 2.5.1, bf16, compiled image encoder).
README_A100_FPS = {
    "sam2.1_hiera_t": 91.2,
    "sam2.1_hiera_s": 84.8,
    "sam2.1_hiera_b+": 64.1,
    "sam2.1_hiera_l": 39.5,
}


@dataclass
class Result:
    model: str
    device: str
    dtype: str
    resolution: int
    compiled: bool
    encoder_images_per_s: float
    encoder_batch: int
    encoder_peak_mem_mb: float
    tracking_frames_per_s: float | None
    tracking_frames: int
    tracking_objects: int
    tracking_peak_mem_mb: float | None


# --------------------------------------------------------------------------------------------
# memory accounting
# --------------------------------------------------------------------------------------------


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux >= 4.0: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _amp(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    if dtype == torch.float32:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


def bench_encoder(
    model: torch.nn.Module,
    *,
    device: torch.device,
    dtype: torch.dtype,
    resolution: int,
    batch: int,
    iters: int,
    warmup: int,
) -> tuple[float, float]:
    """Images/s and peak memory (MB) of ``model.forward_image`` on random input."""
    x = torch.randn(batch, 3, resolution, resolution, device=device)
    with torch.inference_mode(), _amp(device, dtype):
        for _ in range(warmup):
            model.forward_image(x)  # type: ignore[operator]
        _sync(device)
        _reset_peak(device)
        start = time.perf_counter()
        for _ in range(iters):
            model.forward_image(x)  # type: ignore[operator]
        _sync(device)
        elapsed = time.perf_counter() - start
    return batch * iters / elapsed, _peak_mb(device)


def synthetic_clip(num_frames: int, height: int, width: int) -> tuple[list[np.ndarray], list]:
    """Frames ``[H, W, 3]`` uint8 with two moving shapes, and their frame-0 masks."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames, masks0 = [], []
    for t in range(num_frames):
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
        img[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
        img[..., 2] = 96
        cx, cy = width * (0.3 + 0.02 * t), height * 0.5
        ellipse = ((xx - cx) / (0.12 * width)) ** 2 + ((yy - cy) / (0.18 * height)) ** 2 <= 1
        rect = (abs(xx - width * (0.7 - 0.02 * t)) < 0.1 * width) & (abs(yy - cy) < 0.2 * height)
        img[ellipse] = (220, 30, 30)
        img[rect] = (30, 30, 220)
        frames.append(img)
        if t == 0:
            masks0 = [ellipse, rect]
    return frames, masks0


def bench_tracking(
    model: torch.nn.Module,
    *,
    device: torch.device,
    dtype: torch.dtype,
    frames: int,
    video_hw: tuple[int, int],
) -> tuple[float, float]:
    """Frames/s and peak memory (MB) of prompting 2 objects on frame 0 and propagating."""
    from sam2_core.model.predictor import VideoPredictor

    clip, masks0 = synthetic_clip(frames + 1, *video_hw)
    predictor = VideoPredictor(model, autocast=dtype != torch.float32)  # type: ignore[arg-type]
    state = predictor.init_state(clip)
    for obj_id, mask in enumerate(masks0, start=1):
        predictor.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=mask)
    stream = predictor.propagate_in_video(state)
    next(stream)  # frame 0: prompted frame (already computed) + memory encoding
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    count = 0
    for _frame_idx, _obj_ids, _masks in stream:
        count += 1
    _sync(device)
    elapsed = time.perf_counter() - start
    return count / elapsed, _peak_mb(device)


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> Result:
    from sam2_core.model.build import build_model

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    overrides = {"image_size": args.resolution}
    model = build_model(name, device=device, overrides=overrides)
    if args.compile:
        model.compile_image_encoder_now(mode=args.compile_mode)  # type: ignore[operator]
    cpu = device.type == "cpu"
    if args.iters:
        iters = args.iters
    else:
        iters = (3 if name == "tiny" else 2) if cpu else 20
    enc_rate, enc_peak = bench_encoder(
        model,
        device=device,
        dtype=dtype,
        resolution=args.resolution,
        batch=args.batch,
        iters=iters,
        warmup=args.warmup,
    )
    print(
        f"{name:>16} encoder : {enc_rate:8.2f} images/s  (batch {args.batch}, {iters} iters, "
        f"peak {enc_peak:,.0f} MB)",
        flush=True,
    )
    trk_rate = trk_peak = None
    # CPU defaults keep the whole default run near a minute on 2 cores: at 1024 px one tracked
    # frame of sam2.1_hiera_t costs seconds (memory attention over up to 7 x 4096 tokens).
    frames = args.frames or ((3 if name == "tiny" else 2) if cpu else 32)
    if frames > 0:
        trk_rate, trk_peak = bench_tracking(
            model, device=device, dtype=dtype, frames=frames, video_hw=tuple(args.video_hw)
        )
        print(
            f"{name:>16} tracking: {trk_rate:8.2f} frames/s  (2 objects, {frames} frames, "
            f"peak {trk_peak:,.0f} MB)  ratio tracking/encoder {trk_rate / enc_rate:.2f}",
            flush=True,
        )
        if device.type == "cuda" and name in README_A100_FPS:
            base = README_A100_FPS[name]
            print(
                f"{name:>16} ratio vs Meta README A100 FPS ({base}): {trk_rate / base:.2f}",
                flush=True,
            )
    return Result(
        model=name,
        device=str(device),
        dtype=args.dtype,
        resolution=args.resolution,
        compiled=bool(args.compile),
        encoder_images_per_s=enc_rate,
        encoder_batch=args.batch,
        encoder_peak_mem_mb=enc_peak,
        tracking_frames_per_s=trk_rate,
        tracking_frames=frames,
        tracking_objects=2,
        tracking_peak_mem_mb=trk_peak,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="tiny,sam2.1_hiera_t", help="comma-separated names")
    p.add_argument("--resolution", type=int, default=1024, help="model image_size (px)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 on CUDA"
    )
    p.add_argument("--batch", type=int, default=1, help="encoder batch size")
    p.add_argument("--iters", type=int, default=0, help="timed encoder iterations (0: auto)")
    p.add_argument("--warmup", type=int, default=1, help="untimed encoder iterations")
    p.add_argument("--frames", type=int, default=0, help="tracked frames (0: auto, -1: skip)")
    p.add_argument("--video-hw", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    p.add_argument("--compile", action="store_true", help="torch.compile the image encoder")
    p.add_argument("--compile-mode", default="max-autotune")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.dtype == "auto":
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
        f"{torch.get_num_threads()} CPU threads), dtype {args.dtype}, {args.resolution} px, "
        f"torch {torch.__version__}",
        flush=True,
    )
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results.append(run_model(name, args, device))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
