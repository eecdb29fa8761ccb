"""`sam2kf compile`: the pipeline as KFP IR YAML (UI upload) or Pipeline/PipelineVersion CRs."""

from __future__ import annotations

import argparse
import sys

from sam2_core.commands.kfp_options import add_cluster_arguments, settings_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compile the SAM 2.1 fine-tuning pipeline. Upload the YAML in the KFP UI (Pipelines -> "
        "Upload pipeline), or with --k8s-manifests write Pipeline + PipelineVersion resources for "
        "`kubectl apply -f` (KFP in Kubernetes-native API mode), validated against the KFP CRDs."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  sam2kf compile -o sam2_finetune.yaml\n"
        "  sam2kf compile -o sam2_finetune.k8s.yaml --k8s-manifests --namespace kubeflow \\\n"
        "      --crd-dir ../shared/k8s-schemas\n"
        "  sam2kf compile -o gpu.yaml --node-selector cloud.google.com/gke-accelerator=nvidia-l4 \\\n"
        '      --toleration \'{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}\''
    )
    parser.add_argument("-o", "--output", default="sam2_finetune.yaml", help="output file")
    parser.add_argument(
        "--k8s-manifests",
        action="store_true",
        help="write Pipeline/PipelineVersion CRs instead of IR",
    )
    parser.add_argument(
        "--namespace", default="kubeflow", help="namespace of the CRs (--k8s-manifests)"
    )
    parser.add_argument(
        "--version-name", default="", help="PipelineVersion name (default sam2-finetune-<version>)"
    )
    parser.add_argument(
        "--crd-dir",
        default="",
        help="folder with pipelines.kubeflow.org_{pipelines,pipelineversions}.yaml to validate the CRs against",
    )
    add_cluster_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.compile import check_ir, compile_pipeline, validate_manifests

    out = compile_pipeline(
        args.output,
        settings=settings_from(args),
        manifests=args.k8s_manifests,
        namespace=args.namespace,
        version_name=args.version_name,
    )
    if args.k8s_manifests:
        if args.crd_dir:
            errors = validate_manifests(out, args.crd_dir)
            if errors:
                print("\n".join(f"invalid: {e}" for e in errors), file=sys.stderr)
                return 1
            print(f"validated against the KFP CRDs in {args.crd_dir}")
        print(f"wrote {out}: kubectl apply -f {out}")
    else:
        check_ir(out)
        print(f"wrote {out}: upload it in the KFP UI (Pipelines -> Upload pipeline)")
    return 0
