"""MB/s of `write_shards` against a plain copy of the same JPEG bytes (local disk).

    .venv/bin/python benchmarks/shard.py [--videos 6] [--frames 24]

Input: a JPEG frame folder (SA-V val/test layout, 1280x720 q95 synthetic frames, 3 objects with
RLE masks), as `sam2kf extract` writes it. Baseline: copying every JPEG file of that folder
into another folder (read + write of the same bytes, one file at a time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=24)
    args = ap.parse_args()

    from sam2_core.data.prep.shard_writer import write_shards
    from sam2_core.data.prep.synthetic import make_records, write_frame_folders

    records = make_records(
        num_videos=args.videos, num_frames=args.frames, height=720, width=1280, quality=95
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "frames")
        write_frame_folders(records, src)
        jpeg_dir = os.path.join(src, "JPEGImages_24fps")
        files = [os.path.join(d, f) for d, _, fs in os.walk(jpeg_dir) for f in fs]
        mb = sum(os.path.getsize(f) for f in files) / 2**20

        t0 = time.perf_counter()
        for i, f in enumerate(files):
            shutil.copyfile(f, os.path.join(tmp, f"copy-{i}.jpg"))
        copy_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        write_shards(src=src, dst=os.path.join(tmp, "shards"), val_fraction=0.1)
        shard_s = time.perf_counter() - t0
        out_mb = (
            sum(
                os.path.getsize(os.path.join(tmp, "shards", f))
                for f in os.listdir(os.path.join(tmp, "shards"))
            )
            / 2**20
        )

    print(f"input: {len(files)} JPEG frames, {mb:.1f} MB (plus RLE annotations)")
    print(f"plain copy of the JPEG files: {mb / copy_s:8.1f} MB/s")
    print(
        f"sam2kf shard (read, hash, Parquet write, index, manifest): {mb / shard_s:8.1f} MB/s "
        f"-> {out_mb:.1f} MB of shards"
    )
    print(f"ratio shard / copy: {copy_s / shard_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
