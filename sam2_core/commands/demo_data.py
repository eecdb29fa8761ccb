"""`sam2kf demo-data DST`: write the small built-in SA-V-format demo dataset."""

from __future__ import annotations

import argparse

from sam2_core.commands import argtypes


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HEIGHTxWIDTH") from None
    if h < 16 or w < 16 or h % 2 or w % 2:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: both sides must be even and at least 16 (H.264), e.g. 120x208"
        )
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a small, deterministic dataset in SA-V raw format to DST (local path or fsspec "
        "URL): <vid>.mp4 (H.264, 24 fps) plus <vid>_manual.json with masklet RLEs every 4th "
        "frame. Textured look-alike objects move, occlude each other, leave the frame and "
        "appear late. Takes about a second."
    )
    parser.add_argument("dst", metavar="DST", help="output folder")
    parser.add_argument(
        "--num-videos", type=argtypes.int_at_least(1), default=6, help="videos (default 6)"
    )
    parser.add_argument(
        "--num-frames",
        type=argtypes.int_at_least(1),
        default=48,
        help="frames per video (default 48)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size",
        type=_size,
        action="append",
        metavar="HxW",
        help="frame size, even sides, e.g. 120x208; repeat for several (default: six sizes "
        "from 96x160 to 240x320)",
    )
    parser.epilog = "Example: sam2kf demo-data /tmp/demo && sam2kf extract /tmp/demo /tmp/frames"


def run(args: argparse.Namespace) -> int:
    from sam2_core.data.prep.demo import DEFAULT_SIZES, write_demo_dataset

    # ValueError (e.g. an odd frame size): one line, exit 2 (sam2_core.cli).
    ids = write_demo_dataset(
        dst=args.dst,
        num_videos=args.num_videos,
        num_frames=args.num_frames,
        seed=args.seed,
        sizes=args.size or DEFAULT_SIZES,
    )
    print(f"wrote {len(ids)} demo videos to {args.dst}: {', '.join(ids)}")
    return 0
