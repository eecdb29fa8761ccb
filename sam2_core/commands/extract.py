"""`sam2kf extract SRC DST`: SA-V mp4 videos -> JPEG frame folders (SA-V val/test layout)."""

from __future__ import annotations

import argparse
import os
import sys

from sam2_core.commands import argtypes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Decode every <vid>.mp4 under SRC (and one folder level down) with PyAV and write every "
        "Nth frame as JPEG named by its original frame index into DST/JPEGImages_24fps/<vid>/, "
        "copy <vid>_manual.json to DST/Annotations_json/, and optionally write per-object mask "
        "PNGs to DST/Annotations_6fps/<vid>/<obj>/. SRC and DST may be local paths or fsspec "
        "URLs (gs://, s3://). Reruns skip finished videos and redo half-finished ones."
    )
    parser.add_argument(
        "src", metavar="SRC", help="SA-V raw dataset: <vid>.mp4 + <vid>_manual.json"
    )
    parser.add_argument("dst", metavar="DST", help="output folder (SA-V val/test layout)")
    parser.add_argument(
        "--every",
        type=argtypes.int_at_least(1),
        default=4,
        help="keep every Nth frame (default 4 = 6 fps of 24 fps)",
    )
    parser.add_argument(
        "--quality", type=argtypes.int_within(1, 100), default=95, help="JPEG quality (default 95)"
    )
    parser.add_argument(
        "--write-masks",
        action="store_true",
        help="also write binary per-object PNG masks (Annotations_6fps)",
    )
    parser.add_argument(
        "--workers",
        type=argtypes.int_at_least(0),
        default=os.cpu_count() or 1,
        help="parallel processes, one video each (default: CPU count; 0 = in this process)",
    )
    parser.add_argument(
        "--annotations",
        choices=("manual", "auto"),
        default="manual",
        help="which SA-V annotation JSON to copy and draw masks from (default manual)",
    )
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument(
        "--videos",
        metavar="ID,ID,...",
        help="extract only these video ids (comma-separated); unknown ids are reported as failed",
    )
    sel.add_argument(
        "--videos-file",
        metavar="FILE",
        help="extract only the video ids listed in FILE (one per line, # comments; local or URL)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.epilog = (
        "Writes DST/extract_summary.json. Exit status 0 when every video was extracted, 1 when "
        "any failed (each failure is listed by name with its reason), 2 for unusable input. "
        "Example: sam2kf extract gs://bucket/sav_train gs://bucket/sav_train_frames --workers 8 "
        "[--videos sav_000001,sav_000002]"
    )


def _selected_videos(args: argparse.Namespace) -> list[str] | None:
    """The ``--videos`` / ``--videos-file`` selection (None = every video of SRC)."""
    if args.videos is not None:
        text = args.videos.replace(",", "\n")
    elif args.videos_file is not None:
        from sam2_core import storage

        try:
            text = storage.read_text(args.videos_file)
        except FileNotFoundError as e:
            raise ValueError(
                f"--videos-file {args.videos_file}: videos file not found; give a file with one video id per line"
            ) from e
    else:
        return None
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        source = "--videos" if args.videos is not None else args.videos_file
        raise ValueError(f"{source}: no video ids given; list at least one video id")
    return ids


def run(args: argparse.Namespace) -> int:
    from sam2_core.data.prep.extract import extract_dataset

    # DataError/ValueError: one line, exit 2 (sam2_core.cli).
    videos = _selected_videos(args)
    summary = extract_dataset(
        src=args.src,
        dst=args.dst,
        every=args.every,
        quality=args.quality,
        write_masks=args.write_masks,
        workers=args.workers,
        annotations=args.annotations,
        progress=not args.no_progress,
        videos=videos,
    )
    print(
        f"extracted {len(summary.ok) - len(summary.skipped)} videos "
        f"({len(summary.skipped)} already done, {len(summary.failed)} failed), "
        f"{summary.frames} frames at {summary.frames_per_second:.1f} frames/s"
    )
    for vid, note in sorted(summary.warnings.items()):
        print(f"warning: {vid}: {note}", file=sys.stderr)
    for vid, reason in sorted(summary.failed.items()):
        print(f"FAILED {vid}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0
