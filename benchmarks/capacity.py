"""Per-core rates of every data stage, and the capacity plan for SA-V's training split.

    .venv/bin/python benchmarks/capacity.py [--frames 96] [--videos 16] [--epochs 3]
        [--workers 0 1 2] [--json out.json]
    .venv/bin/python benchmarks/capacity.py --plan-only RATES.json [--pods 8 --cores 16]

Stages, each on realistic input and timed by wall clock and by CPU time of this process and its
children (CPU time is the per-core figure; wall time is what a shared machine delivered):

1. extract: ``extract_dataset`` on one synthetic H.264 clip per size (1920x1080 and 1280x720,
   24 fps, constant-bitrate encodes at ``--bitrate-1080`` / ``--bitrate-720``), decode + keep
   every 4th frame + JPEG q95; rate per decoded frame and per kept frame.
2. masks: COCO RLE of SA-V-like masks (3.8 manual masklets per annotated frame, smooth blobs of
   0.3 % to 30 % of the frame) at both sizes: area (what ``shard`` computes per mask), decode
   (what the loader does per clip object) and decode + PNG (``extract --write-masks``).
3. shard: ``write_shards`` from a 1280x720 q95 JPEG frame folder (as ``extract`` writes it);
   also the same data as 2 partitions + commit.
4. loader: frames/s delivered on the standard clip (8 frames, 3 objects, 1024 px, MOSE
   augmentations) for 0 (in-process), 1 and 2 DataLoader workers, over ``--epochs`` whole epochs
   of a ``--videos``-video Parquet set (one clip per video per epoch), counted from building the
   loader: worker start-up at every epoch included, as in training.

Then the plan for the full SA-V training split (see docs/capacity.md) from those rates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# SA-V training split (sav_dataset/README and the issue): videos, hours at 24 fps, masklets.
SAV_VIDEOS = 50_583
SAV_HOURS = 196.0
SAV_FPS = 24
SAV_EVERY = 4
SAV_MANUAL_MASKLETS = 190_316
#: SA-V's mean frame size from the SAM 2 paper (1401 x 1037 px), in megapixels
SAV_MEAN_MPIX = 1401 * 1037 / 1e6
#: gcsfs writes a streamed file in blocks of this size (one request each)
GCS_BLOCK = 5 * 2**20


class Clock:
    """Wall and CPU seconds (this process and its waited-for children) of a block."""

    def __enter__(self) -> Clock:
        self.t0 = time.perf_counter()
        self.c0 = _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = _cpu() - self.c0


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# ----------------------------------------------------------------------------- 1. extract
def bench_extract(work: str, *, height: int, width: int, frames: int, bitrate: int) -> dict:
    from extract import make_clip

    from sam2_core.data.prep.extract import extract_dataset

    src = os.path.join(work, f"raw{height}")
    os.makedirs(src)
    clip = os.path.join(src, f"clip_{height}p.mp4")
    make_clip(clip, frames=frames, height=height, width=width, bitrate=bitrate)
    mbit = os.path.getsize(clip) * 8 / (frames / SAV_FPS) / 1e6
    dst = os.path.join(work, f"frames{height}")
    with Clock() as c:
        s = extract_dataset(src=src, dst=dst, workers=0, progress=False)
    assert not s.failed, s.failed
    jpegs = [
        os.path.join(d, f)
        for d, _, fs in os.walk(os.path.join(dst, "JPEGImages_24fps"))
        for f in fs
    ]
    jpeg_bytes = sum(os.path.getsize(f) for f in jpegs) / max(1, len(jpegs))
    shutil.rmtree(dst)
    return {
        "size": f"{width}x{height}",
        "mbit_s": round(mbit, 2),
        "decoded": frames,
        "kept": s.frames,
        "kept_per_wall_s": s.frames / c.wall,
        "kept_per_cpu_s": s.frames / c.cpu,
        "cpu_ms_per_decoded": 1e3 * c.cpu / frames,
        "jpeg_bytes_per_kept": jpeg_bytes,
    }


# ----------------------------------------------------------------------------- 2. masks
def sav_like_masks(height: int, width: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth blobs (ellipses with a wavy rim) covering 0.3 % to 30 % of the frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(n):
        frac = float(np.exp(rng.uniform(np.log(0.003), np.log(0.3))))
        ry = math.sqrt(frac * height * width / math.pi) * rng.uniform(0.6, 1.4)
        rx = frac * height * width / math.pi / ry
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ang = np.arctan2(yy - cy, xx - cx)
        rim = 1 + 0.15 * np.sin(5 * ang + rng.uniform(0, 6)) + 0.05 * np.sin(13 * ang)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= rim**2)
    return out


def bench_masks(*, height: int, width: int, n: int = 48) -> dict:
    import io

    from PIL import Image

    from sam2_core.data.readers.rle import decode_rle, encode_rle, rle_area

    rles = [encode_rle(m) for m in sav_like_masks(height, width, n)]
    rle_bytes = sum(len(r["counts"]) for r in rles) / n
    reps = 3

    def rate(fn: Callable[[dict], Any]) -> float:
        with Clock() as c:
            for _ in range(reps):
                for r in rles:
                    fn(r)
        return reps * n / c.cpu

    def png(r: dict) -> None:
        Image.fromarray(decode_rle(r).astype("uint8") * 255, mode="L").save(io.BytesIO(), "PNG")

    return {
        "size": f"{width}x{height}",
        "rle_bytes": rle_bytes,
        "area_per_cpu_s": rate(rle_area),
        "decode_per_cpu_s": rate(decode_rle),
        "decode_png_per_cpu_s": rate(png),
    }


# ----------------------------------------------------------------------------- 3. shard
def bench_shard(work: str, *, videos: int, frames: int) -> dict:
    from sam2_core.data.prep.shard_commit import commit_shards
    from sam2_core.data.prep.shard_writer import write_shard_partition, write_shards
    from sam2_core.data.prep.synthetic import make_records, write_frame_folders

    recs = make_records(num_videos=videos, num_frames=frames, height=720, width=1280, quality=95)
    src = os.path.join(work, "shard-src")
    write_frame_folders(recs, src)
    mb = (
        sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, fs in os.walk(os.path.join(src, "JPEGImages_24fps"))
            for f in fs
        )
        / 2**20
    )
    with Clock() as one:
        m = write_shards(src=src, dst=os.path.join(work, "s1"), val_fraction=0.1)
    with Clock() as parts:
        for p in range(2):
            write_shard_partition(
                src=src, dst=os.path.join(work, "s2"), partition=p, num_partitions=2
            )
    with Clock() as commit:
        m2 = commit_shards(dst=os.path.join(work, "s2"), num_partitions=2)
    assert m2.content_hash == m.content_hash
    out_mb = sum(s.bytes for s in m.shards) / 2**20
    return {
        "frames": m.num_frames,
        "videos": m.num_videos,
        "mb_in": mb,
        "mb_out": out_mb,
        "mb_per_wall_s": mb / one.wall,
        "mb_per_cpu_s": mb / one.cpu,
        "frames_per_cpu_s": m.num_frames / one.cpu,
        "partitions_2_mb_per_cpu_s": mb / parts.cpu,
        "commit_s": commit.wall,
    }


# ----------------------------------------------------------------------------- 4. loader
def bench_loader(url: str, *, workers: int, epochs: int) -> dict:
    from sam2_core.data.loader.config import LoaderConfig
    from sam2_core.data.loader.train_loader import build_train_loader

    n = clips = 0
    with Clock() as c:
        cfg = LoaderConfig(
            shards=url,
            num_workers=workers,
            batch_size=1,
            num_frames=8,
            max_num_objects=3,
            resolution=1024,
        )
        loader = build_train_loader(cfg, rank=0, world_size=1, seed=0)
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for batch in loader:
                n += batch.num_frames * batch.num_videos
                clips += batch.num_videos
                del batch  # as in training: the step has consumed it
    return {
        "workers": workers,
        "clips": clips,
        "frames": n,
        "frames_per_wall_s": n / c.wall,
        "cpu_ms_per_frame": 1e3 * c.cpu / n,
        "frames_per_cpu_s": n / c.cpu,
    }


# ----------------------------------------------------------------------------- plan
def plan(rates: dict, *, pods: int, cores: int, gpu_fps: list[float]) -> dict:
    """SA-V training split on ``pods`` x ``cores``, from measured per-core rates."""
    decoded = SAV_HOURS * 3600 * SAV_FPS
    kept = decoded / SAV_EVERY
    ex = {r["size"]: r for r in rates["extract"]}
    e720, e1080 = ex["1280x720"], ex["1920x1080"]
    # CPU per decoded frame grows with the pixel count: interpolate to SA-V's mean frame size.
    px720, px1080 = 1280 * 720 / 1e6, 1920 * 1080 / 1e6
    t = (SAV_MEAN_MPIX - px720) / (px1080 - px720)
    cpu_ms = e720["cpu_ms_per_decoded"] + t * (
        e1080["cpu_ms_per_decoded"] - e720["cpu_ms_per_decoded"]
    )
    jpeg = e720["jpeg_bytes_per_kept"] + t * (
        e1080["jpeg_bytes_per_kept"] - e720["jpeg_bytes_per_kept"]
    )
    extract_cpu_h = decoded * cpu_ms / 1e3 / 3600
    sh = rates["shard"]
    jpeg_total = kept * jpeg
    shard_cpu_h = jpeg_total / 2**20 / sh["mb_per_cpu_s"] / 3600
    # Mask area per RLE inside shard (3.8 manual masklets per annotated frame).
    masks_per_frame = SAV_MANUAL_MASKLETS / SAV_VIDEOS
    area = min(m["area_per_cpu_s"] for m in rates["masks"])
    shard_cpu_h += kept * masks_per_frame / area / 3600
    slots = pods * cores
    shard_files = math.ceil(jpeg_total / (256 * 2**20))
    loader = max(rates["loader"], key=lambda r: r["frames_per_cpu_s"])
    per_core = loader["frames_per_cpu_s"]
    return {
        "decoded_frames": decoded,
        "kept_frames": kept,
        "extract_cpu_ms_per_decoded_frame": cpu_ms,
        "extract_cpu_core_hours": extract_cpu_h,
        "extract_wall_h": extract_cpu_h / slots,
        "shard_cpu_core_hours": shard_cpu_h,
        "shard_wall_h": shard_cpu_h / slots,
        "jpeg_bytes_per_kept": jpeg,
        "extract_bytes_written": jpeg_total,
        "shard_bytes_written": jpeg_total * sh["mb_out"] / sh["mb_in"],
        "extract_requests": {
            "mp4_get": SAV_VIDEOS,
            "json_get": SAV_VIDEOS,
            "jpeg_put": kept,
            "json_put_and_marker": 2 * SAV_VIDEOS,
        },
        "shard_requests": {
            "jpeg_get": kept,
            "json_get": SAV_VIDEOS,
            "list": SAV_VIDEOS + 1,
            "shard_put_blocks": math.ceil(jpeg_total / GCS_BLOCK) + shard_files,
            "shard_files": shard_files,
        },
        "loader_frames_per_core_s": per_core,
        "loader_cores_per_gpu": {str(g): g / per_core for g in gpu_fps},
        "pods": pods,
        "cores": cores,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=96, help="frames of each H.264 clip (24 fps)")
    ap.add_argument("--bitrate-1080", type=float, default=8.0, help="Mbit/s of the 1080p clip")
    ap.add_argument("--bitrate-720", type=float, default=4.0, help="Mbit/s of the 720p clip")
    ap.add_argument("--videos", type=int, default=16, help="videos of the loader/shard data set")
    ap.add_argument("--epochs", type=int, default=3, help="loader epochs (clips = videos x epochs)")
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the loader runs")
    ap.add_argument("--pods", type=int, default=8)
    ap.add_argument("--cores", type=int, default=16)
    ap.add_argument("--gpu-fps", type=float, nargs="*", default=[15.0, 30.0, 60.0])
    ap.add_argument("--json", help="write the rates and the plan here")
    ap.add_argument("--plan-only", help="recompute the plan from a --json file of rates")
    args = ap.parse_args()

    if args.plan_only:
        rates = json.loads(Path(args.plan_only).read_text())["rates"]
    else:
        rates = measure(args)
    p = plan(rates, pods=args.pods, cores=args.cores, gpu_fps=args.gpu_fps)
    print(json.dumps({"rates": rates, "plan": p}, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "plan": p}, indent=1))
    return 0


def measure(args: argparse.Namespace) -> dict:
    from sam2_core.data.prep.shard_writer import write_shards
    from sam2_core.data.prep.synthetic import make_records

    rates: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    work = tempfile.mkdtemp(prefix="bench-capacity-")
    try:
        rates["extract"] = [
            bench_extract(work, height=h, width=w, frames=args.frames, bitrate=int(mbit * 1e6))
            for h, w, mbit in ((1080, 1920, args.bitrate_1080), (720, 1280, args.bitrate_720))
        ]
        print("extract", rates["extract"], file=sys.stderr)
        rates["masks"] = [bench_masks(height=h, width=w) for h, w in ((1080, 1920), (720, 1280))]
        print("masks", rates["masks"], file=sys.stderr)
        rates["shard"] = bench_shard(work, videos=6, frames=24)
        print("shard", rates["shard"], file=sys.stderr)
        recs = make_records(
            num_videos=args.videos, num_frames=12, height=720, width=1280, quality=95
        )
        url = os.path.join(work, "loader")
        write_shards(src=recs, dst=url, val_fraction=0.0)
        rates["loader"] = []
        for rep in range(args.repeats):  # interleaved, so load changes hit every setting alike
            for w in args.workers:
                r = bench_loader(url, workers=w, epochs=args.epochs)
                rates["loader"].append({**r, "round": rep, "load": os.getloadavg()[0]})
                print("loader", rates["loader"][-1], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates["load_after"] = os.getloadavg()
    return rates


if __name__ == "__main__":
    sys.exit(main())
