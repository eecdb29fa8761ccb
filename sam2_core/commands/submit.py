"""`sam2kf submit`: start one run of the pipeline on a KFP installation."""

from __future__ import annotations

import argparse

from sam2_core.commands.kfp_options import add_run_options, connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Compile the pipeline and start a run on the KFP API server at --host."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example:\n"
        "  kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 &\n"
        "  sam2kf submit --host http://localhost:8080 --raw-uri gs://b/sav/raw \\\n"
        "      --registry-uri gs://b/sam2/registry -p dataset_version=2026-11-22 -p num_nodes=2"
    )
    parser.add_argument("--run-name", default="", help="display name of the run")
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.client import submit

    client, arguments, common = connect(args)
    run_id = submit(client, arguments=arguments, run_name=args.run_name, **common)
    print(f"started run {run_id}: {args.host.rstrip('/')}/#/runs/details/{run_id}")
    return 0
