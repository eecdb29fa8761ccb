"""`sam2kf submit`: start one run of the pipeline on a KFP installation."""

from __future__ import annotations

import argparse

from sam2_core.commands._kfp_args import (
    add_cluster_arguments,
    add_run_arguments,
    run_parameters,
    settings_from,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Compile the pipeline and start a run on the KFP API server at --host."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example:\n"
        "  kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 &\n"
        "  sam2kf submit --host http://localhost:8080 --raw-uri gs://b/sav/raw \\\n"
        "      --registry-uri gs://b/sam2/registry -p dataset_version=2026-11-22 -p num_nodes=2"
    )
    add_kfp_connection(parser)
    parser.add_argument("--run-name", default="", help="display name of the run")
    add_run_arguments(parser)
    add_cluster_arguments(parser)


def add_kfp_connection(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("KFP connection")
    g.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    g.add_argument("--namespace", default=None, help="KFP profile namespace (multi-user installs)")
    g.add_argument("--token", default=None, help="bearer token (e.g. `kubectl create token ...`)")
    g.add_argument(
        "--experiment", default="sam2-finetune", help="experiment name (created if missing)"
    )
    g.add_argument("--service-account", default=None, help="service account the run's pods use")
    g.add_argument("--pipeline-root", default=None, help="artifact root, e.g. gs://bucket/kfp")
    g.add_argument("--insecure", action="store_true", help="skip TLS verification")


def run(args: argparse.Namespace) -> int:
    from pipelines.client import make_client, submit

    # Check the arguments before connecting, so typos fail fast and offline.
    arguments, settings = run_parameters(args), settings_from(args)
    client = make_client(
        args.host, namespace=args.namespace, token=args.token, verify_ssl=not args.insecure
    )
    run_id = submit(
        client,
        arguments=arguments,
        settings=settings,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        service_account=args.service_account,
        pipeline_root=args.pipeline_root,
    )
    print(f"started run {run_id}: {args.host.rstrip('/')}/#/runs/details/{run_id}")
    return 0
