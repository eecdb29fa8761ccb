"""Frames/s the training loader delivers per process (decoded, augmented to 1024 px, 8 frames,
3 objects), from Parquet shards and from a JPEG frame folder, on local disk and on gs:// (a real
GCS-API emulator on 127.0.0.1), against bare JPEG decoding of the same 1280x720 frames.

    .venv/bin/python benchmarks/loader.py [--videos 4] [--frames 24] [--clips 6]

Targets (issue 4): >= 60 frames/s per process; Parquet on gs:// >= 3x the JPEG folder on gs://.
Also prints bytes read per clip against the bytes of the frames the clip uses.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _single_thread() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def bare_decode(records: list, repeat: int = 2) -> float:
    import cv2
    import numpy as np

    blobs = [r.image_bytes(f) for r in records for f in r.frame_indices]
    t0 = time.perf_counter()
    for _ in range(repeat):
        for b in blobs:
            cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    return repeat * len(blobs) / (time.perf_counter() - t0)


def run_loader(cfg_kwargs: dict, clips: int) -> dict[str, float]:
    """Frames/s and bytes per clip of ``clips`` clips, in this process (num_workers=0)."""
    from sam2_core.data.dataset import DataConfig, build_train_loader

    cfg = DataConfig(num_workers=0, batch_size=1, num_frames=8, max_num_objects=3, **cfg_kwargs)
    loader = build_train_loader(cfg, rank=0, world_size=1, seed=0)
    it = iter(loader)
    next(it)  # warm-up: opens files / lists the dataset once, like a long-running worker
    src = loader.loaders[0]
    stream = src.last_stream
    assert stream is not None
    before = dict(src.source.stats())
    used0 = stream.bytes_used
    t0 = time.perf_counter()
    n = 0
    for _ in range(clips):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += batch.num_frames * batch.num_videos
    dt = time.perf_counter() - t0
    after = src.source.stats()
    read = after.get("bytes_read", 0) - before.get("bytes_read", 0)
    used = stream.bytes_used - used0
    k = max(1, n // 8)
    return {"fps": n / dt, "read_per_clip": read / k, "used_per_clip": used / k}


def read_only(cfg_kwargs: dict, clips: int) -> float:
    """Frames/s of just reading the clip bytes (no decode, no augmentation)."""
    import numpy as np

    from sam2_core.data.dataset import DataConfig, SourceConfig, open_source
    from sam2_core.data.sampler import ClipSampler

    cfg = DataConfig(**cfg_kwargs)
    src = open_source(SourceConfig(shards=cfg.shards, raw=cfg.raw, split=cfg.split))
    sampler = ClipSampler(8, 3)
    rng = np.random.default_rng(0)
    n = 0
    t0 = 0.0
    for i in range(clips + 1):
        if i == 1:
            t0 = time.perf_counter()
        v = i % len(src.videos)
        c = sampler.sample(
            num_annotated=src.videos[v].num_frames,
            visible=lambda p, v=v: src.visible(v, p),
            rng=rng,
        )
        assert c is not None
        src.read(v, c.positions, c.obj_ids)
        n += 8 if i else 0
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=24, help="annotated frames per video")
    ap.add_argument("--clips", type=int, default=6, help="timed clips per configuration")
    ap.add_argument("--row-group-mb", type=float, nargs="+", default=[32.0, 4.0])
    ap.add_argument("--no-gcs", action="store_true", help="skip the gs:// emulator runs")
    args = ap.parse_args()
    _single_thread()

    from sam2_core.data.shards import write_shards
    from sam2_core.data.synthetic import make_records, write_frame_folders

    t0 = time.perf_counter()
    records = make_records(
        num_videos=args.videos, num_frames=args.frames, height=720, width=1280, quality=95
    )
    mb = sum(len(r.image_bytes(f)) for r in records for f in r.frame_indices) / 2**20
    print(
        f"synthesized {args.videos} videos x {args.frames} frames 1280x720 q95 "
        f"({mb:.0f} MB) in {time.perf_counter() - t0:.1f} s"
    )
    bare = bare_decode(records)
    print(f"bare JPEG decode (cv2, 1 thread):          {bare:7.1f} frames/s")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bases = {"local": tmp}
        ctx = None
        if not args.no_gcs:
            from tests.data.conftest import run_gcs_emulator

            ctx = run_gcs_emulator("sam2kf-bench")
            bases["gs"] = ctx.__enter__()
        try:
            for where, base in bases.items():
                frames = f"{base}/frames"
                write_frame_folders(records, frames)
                for rg in args.row_group_mb:
                    shards = f"{base}/shards-rg{rg:g}"
                    write_shards(src=records, dst=shards, row_group_mb=rg, val_fraction=0.0)
                    key = f"parquet {where} rg={rg:g}MB"
                    results[key] = run_loader({"shards": shards}, args.clips)
                    results[key]["read_fps"] = read_only({"shards": shards}, args.clips)
                key = f"jpeg folder {where}"
                results[key] = run_loader({"raw": frames}, args.clips)
                results[key]["read_fps"] = read_only({"raw": frames}, args.clips)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)

    print(
        f"{'source':28s} {'frames/s':>9s} {'x bare':>7s} {'read-only f/s':>14s} "
        f"{'MB read/clip':>13s} {'MB used/clip':>13s}"
    )
    for key, r in results.items():
        print(
            f"{key:28s} {r['fps']:9.1f} {r['fps'] / bare:7.2f} {r['read_fps']:14.1f} "
            f"{r['read_per_clip'] / 2**20:13.2f} {r['used_per_clip'] / 2**20:13.2f}"
        )
    best_local = max(v["fps"] for k, v in results.items() if "parquet local" in k)
    print(
        f"\nper-process target >= 60 frames/s: parquet local {best_local:.1f} "
        f"({'met' if best_local >= 60 else 'NOT met'}); Meta's loader ~11 frames/s here "
        f"-> {best_local / 11:.1f}x"
    )
    if not args.no_gcs:
        folder = results["jpeg folder gs"]
        for key, r in results.items():
            if key.startswith("parquet gs"):
                print(
                    f"{key} vs jpeg folder gs: delivered {r['fps'] / folder['fps']:.2f}x, "
                    f"read-only {r['read_fps'] / folder['read_fps']:.2f}x (target >= 3x)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
