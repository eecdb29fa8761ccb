"""`sam2kf promote`: champion/challenger gate on J&F in a registry on any fsspec URL."""

from __future__ import annotations

import argparse
import json


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
    parser.add_argument("--dataset-name", default="demo")
    parser.add_argument("--dataset-version", default="v1")
    parser.add_argument("--split", default="val", help="evaluation split name")
    parser.add_argument("--run-id", default="manual", help="pipeline run id of the challenger")
    parser.add_argument("--model-name", default="", help="model configuration name, e.g. tiny")


def run(args: argparse.Namespace) -> int:
    from sam2_core import storage
    from sam2_core.registry import ModelRecord, Registry

    reg = Registry(args.registry)
    if args.show:
        champ = reg.champion()
        print(
            json.dumps(
                {"champion": champ.to_dict() if champ else None, "history": reg.history()}, indent=2
            )
        )
        return 0
    if not args.model_uri or (args.jf is None and not args.summary):
        print("sam2kf promote: --model-uri and one of --jf/--summary are required (or --show)")
        return 2
    metrics: dict = {}
    jf = args.jf
    if args.summary:
        metrics = storage.read_json(args.summary)
        if "J&F" not in metrics:
            print(f"sam2kf promote: {args.summary} has no 'J&F' key")
            return 2
        jf = float(metrics["J&F"])
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
    decision = reg.promote(record, margin=args.margin, champion_jf=args.champion_jf)
    print(("PROMOTED: " if decision.promote else "kept champion: ") + decision.reason)
    return 0
