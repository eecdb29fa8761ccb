"""`sam2kf compile`: the pipeline as KFP IR YAML (UI upload) or Pipeline/PipelineVersion CRs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
        "  sam2kf compile -o sam2_finetune.k8s.yaml --k8s-manifests --namespace kubeflow\n"
        "  sam2kf compile -o mine.yaml --image-repo registry.example.com/team/sam2-kubeflow\n"
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
        help="folder with pipelines.kubeflow.org_{pipelines,pipelineversions}.yaml to validate "
        "the CRs against (default: the copies shipped in the package)",
    )
    add_cluster_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.compile import (
        PACKAGED_CRD_DIR,
        check_ir,
        compile_pipeline,
        missing_crds,
        validate_manifests,
    )

    crd_dir = Path(args.crd_dir) if args.crd_dir else PACKAGED_CRD_DIR
    if args.k8s_manifests:
        missing = missing_crds(crd_dir)
        if missing:
            # Refuse before writing: an unvalidated file must not look like a validated one.
            print(
                f"--crd-dir {crd_dir}: no {', '.join(p.name for p in missing)} there; point it "
                "at the KFP CRDs (kubeflow/pipelines manifests/kustomize/base/crds/) or omit it "
                "to use the copies shipped in the package",
                file=sys.stderr,
            )
            return 2
    out = compile_pipeline(
        args.output,
        settings=settings_from(args),
        manifests=args.k8s_manifests,
        namespace=args.namespace,
        version_name=args.version_name,
    )
    if args.k8s_manifests:
        errors = validate_manifests(out, crd_dir)
        if errors:
            # Our own output failed the CRDs (a bug, not bad input): leave nothing that looks
            # usable, and say it in one line.
            Path(out).unlink(missing_ok=True)
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            print(
                f"sam2kf compile: the compiled resources fail the CRDs in {crd_dir}: "
                f"{errors[0]}{more}; nothing written. Please report this with --debug output",
                file=sys.stderr,
            )
            return 1
        print(f"validated against the KFP CRDs in {crd_dir}")
        print(f"wrote {out}: kubectl apply -f {out}")
    else:
        check_ir(out)
        print(f"wrote {out}: upload it in the KFP UI (Pipelines -> Upload pipeline)")
    return 0
