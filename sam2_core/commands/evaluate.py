"""`sam2kf evaluate`: J&F of existing predictions, or inference + J&F + HTML report for a model."""

from __future__ import annotations

import argparse
import os
import sys

from sam2_core.commands import argtypes

EPILOG = """\
modes:
  score existing predictions (SA-V <vid>/<obj>/<frame>.png or DAVIS <vid>/<frame>.png layouts,
  detected per video, exactly as the official sav_evaluator / DAVIS tools):
    sam2kf evaluate --gt-dir Annotations_6fps --pred-dir preds [--num-workers 8]
  run a model over a dataset (first-frame GT masks as prompts), then score and report:
    sam2kf evaluate --model tiny --data demo_data --out eval_out
    sam2kf evaluate --model sam2.1_hiera_b+ --checkpoint run/model_final.pt --data sav_val --out ev
    sam2kf evaluate --model run/model_final.pt --data shards/ --split val --out ev
  compare two prediction sets (e.g. champion vs challenger) in one report:
    sam2kf evaluate --gt-dir G --pred-dir challenger --compare champion

outputs (in --out; with --gt-dir/--pred-dir the default is the prediction folder, like the
official tool): results.csv (official format), summary.json, per_video.csv, per_frame.json,
report.html (self-contained); with --model also predictions/ and _progress/ (resume markers).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    src = parser.add_argument_group("score existing predictions")
    src.add_argument("--gt-dir", "--gt_root", help="GT mask root (one folder per video)")
    src.add_argument("--pred-dir", "--pred_root", help="prediction root, same layout as GT")
    src.add_argument(
        "--frames-dir", help="optional JPEG frame root (<vid>/<frame>.jpg) for report overlays"
    )
    mod = parser.add_argument_group("run a model")
    mod.add_argument(
        "--model", help="model name (tiny, sam2.1_hiera_t/s/b+/l), config YAML, or checkpoint file"
    )
    mod.add_argument("--checkpoint", help="weights for a named --model ({'model': state_dict})")
    mod.add_argument("--model-name", help="config of a --model checkpoint (default: inferred)")
    mod.add_argument("--data", help="dataset URL: SA-V raw/frames, DAVIS/MOSE, or Parquet shards")
    mod.add_argument("--format", default="auto", help="dataset format (default: auto-detect)")
    mod.add_argument("--split", help="dataset split, e.g. val")
    mod.add_argument("--videos", nargs="+", help="only these video ids")
    mod.add_argument("--max-videos", type=argtypes.int_at_least(1), help="at most this many videos")
    mod.add_argument(
        "--device",
        default="auto",
        type=argtypes.device,
        help="auto (CUDA if present, bf16) | cpu | cuda",
    )
    mod.add_argument(
        "--prompt",
        choices=("first", "appear"),
        default="first",
        help="first: GT masks of the first annotated frame; appear: each object on the first "
        "annotated frame where it is visible (objects appearing later)",
    )
    mod.add_argument(
        "--layout",
        choices=("auto", "sav", "davis"),
        default="auto",
        help="prediction layout (auto: DAVIS for DAVIS/MOSE data, SA-V otherwise)",
    )
    mod.add_argument(
        "--max-objects-per-batch", type=argtypes.int_at_least(1), help="objects propagated together"
    )
    mod.add_argument(
        "--write-all-frames", action="store_true", help="also write unannotated frames (SA-V)"
    )
    mod.add_argument(
        "--resume",
        choices=("auto", "strict", "off"),
        default="auto",
        help="finished videos in --out: auto = reuse those made with the same weights and "
        "settings, redo the others; strict = refuse if any was made otherwise; off = redo all",
    )
    mod.add_argument("--no-resume", action="store_true", help="same as --resume off")
    mod.add_argument(
        "--tensorboard-dir", help="also log the scores as TensorBoard scalars (folder or URL)"
    )
    common = parser.add_argument_group("scoring and output")
    common.add_argument(
        "--out",
        help="output folder (default with --pred-dir: the pred folder); with --model also an "
        "object-store URL (gs://, s3://): written locally, uploaded at the end, summary.json last",
    )
    common.add_argument(
        "--do-not-skip-first-and-last",
        "--do_not_skip_first_and_last_frame",
        action="store_true",
        help="also score the first and last annotated frame (not the standard protocol)",
    )
    common.add_argument(
        "-n",
        "--num-workers",
        "--num_processes",
        type=argtypes.int_at_least(0),
        default=min(4, os.cpu_count() or 1),
        help="processes over videos when scoring a folder (default: %(default)s)",
    )
    common.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="GT and prediction must have the same videos (default: on)",
    )
    common.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score a missing prediction PNG as an empty mask instead of failing",
    )
    common.add_argument("--compare", help="second prediction folder or earlier --out folder")
    common.add_argument("--labels", nargs=2, default=("this run", "reference"), metavar="NAME")
    common.add_argument("--no-report", action="store_true", help="do not write report.html")
    common.add_argument("--kfp-metrics", help="write KFP v1 mlpipeline-metrics JSON here")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _print_result(result: object, out: str) -> None:
    from sam2_core.eval.jf import JFResult

    assert isinstance(result, JFResult)
    print(result.results_csv().replace(",", " "), end="")
    print(f"\nGlobal score: J&F: {result.JF:.1f} J: {result.J:.1f} F: {result.F:.1f}")
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"results written to {out}")


def _score_dirs(args: argparse.Namespace) -> int:
    from sam2_core.eval.jf import evaluate_predictions
    from sam2_core.eval.report import DirOverlaySource, load_result_dir, write_report

    skip = not args.do_not_skip_first_and_last
    kw = dict(
        skip_first_and_last=skip,
        num_workers=args.num_workers,
        strict=args.strict,
        missing="empty" if args.missing_as_empty else "error",
        progress=not args.quiet,
    )
    result = evaluate_predictions(gt_dir=args.gt_dir, pred_dir=args.pred_dir, **kw)  # type: ignore[arg-type]
    out = args.out or args.pred_dir
    result.write(out)
    other, other_dir = None, None
    if args.compare:
        if os.path.exists(os.path.join(args.compare, "per_frame.json")):
            other = load_result_dir(args.compare)
            other_dir = os.path.join(args.compare, "predictions")
        else:
            other = evaluate_predictions(gt_dir=args.gt_dir, pred_dir=args.compare, **kw)  # type: ignore[arg-type]
            other_dir = args.compare
    if not args.no_report:
        write_report(
            os.path.join(out, "report.html"),
            result,
            pred_dir=args.pred_dir,
            source=DirOverlaySource(args.gt_dir, args.frames_dir),
            compare=other,
            compare_pred_dir=other_dir if other_dir and os.path.isdir(other_dir) else None,
            labels=args.labels,
            title=f"J&F: {args.pred_dir}",
        )
    _write_kfp(args, result)
    _print_result(result, out)
    return 0


def _write_kfp(args: argparse.Namespace, result: object) -> None:
    if not args.kfp_metrics:
        return
    from sam2_core.eval.report import kfp_v1_metrics
    from sam2_core.storage import write_json_atomic

    write_json_atomic(args.kfp_metrics, kfp_v1_metrics(result))  # type: ignore[arg-type]


def _run_model(args: argparse.Namespace) -> int:
    from sam2_core.eval.report import load_result_dir
    from sam2_core.eval.vos import evaluate_model

    summary = evaluate_model(
        model=args.model,
        checkpoint=args.checkpoint,
        model_name=args.model_name,
        data=args.data,
        out=args.out,
        device=args.device,
        fmt=args.format,
        split=args.split,
        videos=args.videos,
        max_videos=args.max_videos,
        prompt=args.prompt,
        layout=args.layout,
        max_objects_per_batch=args.max_objects_per_batch,
        skip_first_and_last=not args.do_not_skip_first_and_last,
        write_all_frames=args.write_all_frames,
        resume="off" if args.no_resume else args.resume,
        report=not args.no_report,
        compare_dir=args.compare,
        tensorboard_dir=args.tensorboard_dir,
        progress=not args.quiet,
    )
    result = load_result_dir(args.out)
    _write_kfp(args, result)
    _print_result(result, args.out)
    print(f"device {summary['device']}; report: {summary['files'].get('report_html', '-')}")
    return 0


def run(args: argparse.Namespace) -> int:
    # Library errors (DataError, CheckpointError: ValueErrors; missing files) become one line
    # with exit status 2 in sam2_core.cli.
    from sam2_core.commands.errors import InputError

    scoring = bool(args.gt_dir or args.pred_dir)
    if scoring and args.model:
        raise InputError(
            "--gt-dir/--pred-dir and --model both given; use --gt-dir/--pred-dir to score "
            "existing predictions or --model/--data/--out to run a model, not both"
        )
    if scoring:
        if not (args.gt_dir and args.pred_dir):
            raise InputError("--gt-dir and --pred-dir go together; give both")
        return _score_dirs(args)
    if not (args.model and args.data and args.out):
        missing = [
            f
            for f, v in (("--model", args.model), ("--data", args.data), ("--out", args.out))
            if not v
        ]
        raise InputError(
            f"{', '.join(missing)} missing; give --gt-dir and --pred-dir, or --model, --data and --out"
        )
    return _run_model(args)
