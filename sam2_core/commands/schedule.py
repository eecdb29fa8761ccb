"""`sam2kf schedule`: a recurring KFP run for scheduled retraining (one at a time, no catch-up)."""

from __future__ import annotations

import argparse

from sam2_core.commands.kfp_options import add_run_options, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Create a recurring run: KFP starts the pipeline on the cron schedule with max concurrency 1 "
        "and no catch-up of missed runs. Each run warm-starts from the registry's champion and "
        "extracts/shards only videos no earlier dataset version has seen; bump dataset_version "
        "per run with a cron-friendly value, or keep one version name to retrain on new videos only."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example (Sundays 03:00; KFP cron has 6 fields, seconds first):\n"
        '  sam2kf schedule --host http://localhost:8080 --cron "0 0 3 * * 0" \\\n'
        "      --raw-uri gs://b/sav/raw --registry-uri gs://b/sam2/registry"
    )
    parser.add_argument(
        "--cron", required=True, help='6-field cron, seconds first, e.g. "0 0 3 * * 0"'
    )
    parser.add_argument(
        "--job-name", default="sam2-finetune-scheduled", help="name of the recurring run"
    )
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.client import check_cron, schedule
    from sam2_core.commands.errors import InputError

    try:
        cron = check_cron(args.cron)  # fail before connecting
    except ValueError:
        fields = len(args.cron.split())
        raise InputError(
            f"--cron {args.cron!r} has {fields} field(s) but KFP's cron has 6, seconds first; "
            "prepend the seconds, e.g. --cron '0 0 3 * * 0' (Sundays 03:00)"
        ) from None
    client, arguments, common = connect(args)
    rec_id = schedule(client, cron=cron, arguments=arguments, job_name=args.job_name, **common)
    print(f"created recurring run {rec_id} ({cron}, max concurrency 1, no catch-up)")
    return 0
