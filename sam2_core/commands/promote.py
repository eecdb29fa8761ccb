"""`sam2kf promote`: champion/challenger gate on J&F in a registry on any fsspec URL."""

from __future__ import annotations

import argparse
import json
import sys

from sam2_core.commands.errors import InputError, one_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare a challenger model with the registry's champion on the same evaluation split "
        "and make it the champion when its J&F is higher by at least --margin. The first model "
        "ever registered is promoted. Every decision is appended to <registry>/history/; the "
        "champion pointer <registry>/champion.json is replaced atomically."
    )
    parser.epilog = (
        "examples:\n"
        "  sam2kf promote --registry gs://b/registry --show\n"
        "  sam2kf promote --registry gs://b/registry --model-uri gs://b/run7/model_final.pt \\\n"
        "      --summary gs://b/run7/eval/summary.json --champion-jf 61.2 \\\n"
        "      --dataset-name sav --dataset-version 2026-11-22 --run-id run7 --margin 0.5"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--registry", required=True, help="registry URL (path, gs://, s3://, minio://)"
    )
    parser.add_argument(
        "--show", action="store_true", help="print the champion and history, then exit"
    )
    parser.add_argument(
        "--model-uri", help="URL of the challenger model file ({'model': state_dict})"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--jf", type=float, help="challenger J&F (0..100)")
    group.add_argument("--summary", help="evaluation summary.json of the challenger (key 'J&F')")
    parser.add_argument(
        "--champion-jf",
        type=float,
        default=None,
        help="champion J&F re-measured on the challenger's split (default: the stored value, "
        "only accepted when it was measured on the same split)",
    )
    parser.add_argument("--margin", type=float, default=0.0, help="minimum J&F gain to promote")
    # No defaults: the registry compares J&F only within one dataset/version/split, so a silent
    # "demo"/"v1" would compare (or refuse) against the wrong champion.
    parser.add_argument("--dataset-name", default="", help="dataset of the evaluation (required)")
    parser.add_argument(
        "--dataset-version", default="", help="dataset version of the evaluation (required)"
    )
    parser.add_argument("--split", default="", help="evaluation split name, e.g. val (required)")
    parser.add_argument("--run-id", default="manual", help="pipeline run id of the challenger")
    parser.add_argument("--model-name", default="", help="model configuration name, e.g. tiny")


def run(args: argparse.Namespace) -> int:
    from sam2_core import storage
    from sam2_core.registry import (
        EXIT_STATUS,
        LOST_RACE,
        ModelRecord,
        PromotionRaceLost,
        Registry,
        RegistryInputError,
    )

    reg = Registry(args.registry)
    if args.show:
        champ = reg.champion()
        print(
            json.dumps(
                {"champion": champ.to_dict() if champ else None, "history": reg.history()}, indent=2
            )
        )
        return 0
    missing = [
        flag
        for flag, value in (
            ("--model-uri", args.model_uri),
            ("--jf or --summary", args.jf is not None or args.summary),
            ("--dataset-name", args.dataset_name),
            ("--dataset-version", args.dataset_version),
            ("--split", args.split),
        )
        if not value
    ]
    if missing:
        raise InputError(
            f"{', '.join(missing)} missing; a promotion compares a challenger on one evaluation "
            "split, so give --model-uri, --jf/--summary, --dataset-name, --dataset-version and "
            "--split (or --show)"
        )
    metrics: dict = {}
    jf = args.jf
    if args.summary:
        try:
            metrics = dict(storage.read_json(args.summary))
        except (ValueError, TypeError) as e:
            raise InputError(
                f"--summary {args.summary}: not a JSON object ({one_line(str(e))}); give the "
                "summary.json that `sam2kf evaluate` wrote"
            ) from None
        if "J&F" not in metrics:
            raise InputError(
                f"--summary {args.summary}: no 'J&F' key; give the summary.json that "
                "`sam2kf evaluate` wrote, or --jf VALUE"
            )
        try:
            jf = float(metrics["J&F"])
        except (TypeError, ValueError):
            raise InputError(
                f"--summary {args.summary}: 'J&F' is {metrics['J&F']!r}, not a number; give "
                "the summary.json that `sam2kf evaluate` wrote, or --jf VALUE"
            ) from None
    record = ModelRecord(
        model_uri=args.model_uri,
        jf=float(jf),
        dataset_name=args.dataset_name,
        dataset_version=args.dataset_version,
        split=args.split,
        run_id=args.run_id,
        model_name=args.model_name,
        metrics=metrics,
    )
    try:
        decision = reg.promote(record, margin=args.margin, champion_jf=args.champion_jf)
    except RegistryInputError as e:
        raise InputError(f"{_flagged(str(e))}; fix the value and rerun") from None
    except PromotionRaceLost as e:
        print(
            f"sam2kf promote: --registry {args.registry}: another promotion won the race "
            f"({one_line(str(e))}); rerun the step to decide against the new champion",
            file=sys.stderr,
        )
        return EXIT_STATUS[LOST_RACE]
    print(("PROMOTED: " if decision.promote else "kept champion: ") + decision.reason)
    return decision.exit_status


def _flagged(message: str) -> str:
    """Name the CLI flags behind the library's parameter names in a registry message."""
    for name, flag in (
        ("challenger J&F", "--jf/--summary J&F"),
        ("champion J&F", "--champion-jf"),
        ("margin", "--margin"),
        ("challenger model URI", "--model-uri"),
        ("challenger model", "--model-uri"),
    ):
        if message.startswith(name):
            return flag + message[len(name) :]
    return message
