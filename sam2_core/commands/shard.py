"""`sam2kf shard SRC DST`: pack frames and RLE masks into Parquet shards (any fsspec URL)."""

from __future__ import annotations

import argparse
import json

from sam2_core.commands import argtypes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Pack a dataset (SA-V raw or extracted frames, DAVIS/MOSE, SA-1B: anything "
        "`iter_videos` reads) into Parquet shards: one row per annotated frame with the JPEG "
        "bytes as stored and COCO-RLE masks, plus index.parquet (per-video location, objects, "
        "split) and manifest.json (row counts, sha256), written last as the completion marker."
    )
    parser.epilog = (
        "examples:\n"
        "  sam2kf shard data/frames data/shards\n"
        "  sam2kf shard gs://bucket/sav/frames gs://bucket/datasets/sav/v1 --val-fraction 0.05\n"
        "  sam2kf shard data/shards --verify      (check an existing shard directory)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("src", help="dataset URL or path (local, gs://, s3://)")
    parser.add_argument("dst", nargs="?", help="output directory URL or path")
    parser.add_argument(
        "--shard-size-mb",
        type=argtypes.float_within(0, low_open=True),
        default=256,
        help="target shard file size",
    )
    parser.add_argument(
        "--row-group-mb",
        type=argtypes.float_within(0, low_open=True),
        default=4,
        help="target row-group size in MB, the random-access unit (default 4: a 1280x720 clip of 8 frames then reads ~1.8x its bytes; 32 MB reads ~6x)",
    )
    parser.add_argument(
        "--val-fraction",
        type=argtypes.float_within(0, 1),
        default=0.1,
        help="share of videos put in split 'val'",
    )
    parser.add_argument("--seed", type=int, default=0, help="salt of the train/val split hash")
    parser.add_argument(
        "--format",
        dest="fmt",
        default="auto",
        help="input format: auto, sav_raw, sav_frames, davis, sa1b, parquet",
    )
    parser.add_argument(
        "--annotations", default="manual", help="SA-V annotations: manual, auto or both"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="with only SRC: check SRC completely (manifest schema, sizes, sha256, page checksums, every JPEG and mask) instead of writing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from sam2_core.commands.errors import InputError
    from sam2_core.data.prep.shard_writer import write_shards
    from sam2_core.data.readers.shard_verify import verify_dataset

    # DataError (a ValueError): one line, exit 2 (sam2_core.cli).
    if args.dst is None:
        if not args.verify:
            raise InputError("DST missing; give SRC DST, or --verify SRC to check shards")
        index = verify_dataset(args.src)
        m = index.manifest
        print(
            f"{args.src}: OK, {m.num_videos} videos, {m.num_frames} frames, "
            f"{len(m.shards)} shards, splits {json.dumps(m.splits)}"
        )
        return 0
    manifest = write_shards(
        src=args.src,
        dst=args.dst,
        shard_size_mb=args.shard_size_mb,
        row_group_mb=args.row_group_mb,
        val_fraction=args.val_fraction,
        seed=args.seed,
        fmt=args.fmt,
        annotations=args.annotations,
        progress=not args.no_progress,
    )
    if args.verify:
        verify_dataset(args.dst)
    total = sum(s.bytes for s in manifest.shards)
    print(
        f"{args.dst}: {manifest.num_videos} videos, {manifest.num_frames} frames, "
        f"{len(manifest.shards)} shards, {total / 2**20:.1f} MB, splits {json.dumps(manifest.splits)}"
    )
    return 0
