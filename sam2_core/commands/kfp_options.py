"""Arguments shared by ``sam2kf compile|submit|schedule``: connection, cluster settings and run
parameters, and the one way submit and schedule turn them into a client and arguments."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sam2_core.commands import argtypes
from sam2_core.commands.errors import InputError
from sam2_core.launch.images import IMAGE_REPO_ENV, IMAGE_TAG_ENV, ImageSettings
from sam2_core.launch.spec import LaunchSpec

_TRAIN = LaunchSpec()


def add_kfp_connection(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("KFP connection")
    g.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    g.add_argument("--namespace", default=None, help="KFP profile namespace (multi-user installs)")
    g.add_argument(
        "--token-file",
        default=None,
        help="file holding the bearer token (e.g. `kubectl create token ...` output or a mounted "
        "Secret); default: $SAM2KF_KFP_TOKEN or $KFP_TOKEN. Never pass a token in argv.",
    )
    # Removed: a token in argv is visible in `ps` and logs. Kept only to say what to do instead.
    g.add_argument("--token", default=None, help=argparse.SUPPRESS)
    g.add_argument(
        "--experiment", default="sam2-finetune", help="experiment name (created if missing)"
    )
    g.add_argument("--service-account", default=None, help="service account the run's pods use")
    g.add_argument("--pipeline-root", default=None, help="artifact root, e.g. gs://bucket/kfp")
    g.add_argument("--insecure", action="store_true", help="skip TLS verification")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Connection, run parameters and cluster settings (``submit`` and ``schedule``)."""
    add_kfp_connection(parser)
    add_run_arguments(parser)
    add_cluster_arguments(parser)


def connect(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(client, pipeline arguments, keyword arguments shared by submit and schedule).

    The arguments are checked before connecting, so typos fail fast and offline.
    """
    from pipelines.client import make_client
    from sam2_core.commands.secrets import TOKEN_ENV, read_token, register_secret

    if args.token is not None:
        register_secret(args.token)
        raise InputError(
            "--token is no longer accepted (a token in argv is visible to every process and "
            f"lands in logs); use --token-file FILE or the environment variable {TOKEN_ENV[0]} "
            f"(or {TOKEN_ENV[1]})"
        )
    token = read_token(token_file=args.token_file)
    arguments, settings = run_parameters(args), settings_from(args)
    client = make_client(
        args.host, namespace=args.namespace, token=token, verify_ssl=not args.insecure
    )
    common = {
        "settings": settings,
        "experiment": args.experiment,
        "namespace": args.namespace,
        "service_account": args.service_account,
        "pipeline_root": args.pipeline_root,
    }
    return client, arguments, common


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Compile-time Kubernetes settings (kfp-kubernetes); see pipelines.finetune.ClusterSettings."""
    g = parser.add_argument_group("cluster settings (compiled into the pipeline)")
    g.add_argument("--pvc", default="", help="RWX PVC mounted on every step and training pod")
    g.add_argument("--pvc-mount-path", default="/data", help="mount path of --pvc (default /data)")
    g.add_argument(
        "--storage-secret",
        default="mlpipeline-minio-artifact",
        help="Secret with keys accesskey/secretkey exposed as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
        "(default: KFP's MinIO secret; '' to disable, e.g. on GKE with Workload Identity)",
    )
    g.add_argument(
        "--s3-endpoint",
        default="http://minio-service.kubeflow:9000",
        help="S3 endpoint for minio:// and s3:// URIs ('' for AWS S3 / gs://)",
    )
    g.add_argument(
        "--node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="GPU node selector (repeatable)",
    )
    g.add_argument(
        "--toleration",
        action="append",
        default=[],
        metavar="JSON",
        help='toleration for GPU steps and training pods, e.g. \'{"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}\'',
    )
    g.add_argument(
        "--eval-gpus",
        type=argtypes.int_at_least(0),
        default=1,
        help="GPUs of each evaluation step (0 = CPU)",
    )
    g.add_argument("--eval-gpu-resource", default="nvidia.com/gpu", help="GPU resource type")
    g.add_argument(
        "--eval-gpu-product",
        default="",
        help="node label nvidia.com/gpu.product, e.g. NVIDIA-A100-SXM4-80GB",
    )
    g.add_argument(
        "--train-namespace",
        default=_TRAIN.namespace,
        help="namespace of the training job ('' = the run's)",
    )
    g.add_argument(
        "--train-service-account",
        default=_TRAIN.service_account,
        help=f"service account of the training pods (default {_TRAIN.service_account})",
    )
    g.add_argument(
        "--image-repo",
        default="",
        help=f"repository of every step's image and the training pods' image, e.g. "
        f"registry.example.com/team/sam2-kubeflow (default ${IMAGE_REPO_ENV}, else "
        f"{ImageSettings().repository}); images/build.sh builds and pushes both images",
    )
    g.add_argument(
        "--image-tag",
        default="",
        help=f"tag of those images without the -data/-train suffix (default ${IMAGE_TAG_ENV}, "
        f"else the package version {ImageSettings().tag})",
    )
    g.add_argument(
        "--train-image",
        default=_TRAIN.image,
        help="training pods' image when it is not <repository>:<tag>-train (default: that image)",
    )
    g.add_argument(
        "--train-cpu", default=_TRAIN.cpu, help=f"CPU request per training pod ({_TRAIN.cpu})"
    )
    g.add_argument(
        "--train-memory", default=_TRAIN.memory, help=f"memory per training pod ({_TRAIN.memory})"
    )
    g.add_argument(
        "--train-runtime",
        default=_TRAIN.runtime,
        help=f"Trainer v2 runtime of TrainJobs (default {_TRAIN.runtime}, from manifests/)",
    )
    g.add_argument(
        "--train-runtime-kind",
        default=_TRAIN.runtime_kind,
        choices=["TrainingRuntime", "ClusterTrainingRuntime"],
        help="its kind; the Helm chart's stock runtime is ClusterTrainingRuntime torch-distributed",
    )
    g.add_argument(
        "--data-retries",
        type=argtypes.int_at_least(0),
        default=3,
        help="retries of the extract and shard steps",
    )


def settings_from(args: argparse.Namespace) -> Any:
    from pipelines.finetune import ClusterSettings

    selector = {}
    for item in args.node_selector:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(
                f"--node-selector {item!r}: missing '='; give KEY=VALUE, e.g. "
                "--node-selector cloud.google.com/gke-accelerator=nvidia-tesla-a100"
            )
        selector[key] = value
    tolerations = []
    for item in args.toleration:
        try:
            tolerations.append(dict(json.loads(item)))
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"--toleration {item!r}: not a JSON object ({exc}); "
                'give e.g. \'{"key":"nvidia.com/gpu","operator":"Exists"}\''
            ) from None
    try:
        images = ImageSettings.from_env(repository=args.image_repo, tag=args.image_tag)
    except ValueError as exc:
        raise InputError(f"--image-repo/--image-tag: {exc}") from None
    return ClusterSettings(
        images=images,
        pvc_claim=args.pvc,
        pvc_mount_path=args.pvc_mount_path,
        storage_secret=args.storage_secret,
        s3_endpoint=args.s3_endpoint,
        node_selector=selector,
        tolerations=tolerations,
        eval_gpus=args.eval_gpus,
        eval_gpu_resource=args.eval_gpu_resource,
        eval_gpu_product=args.eval_gpu_product,
        train=LaunchSpec(
            namespace=args.train_namespace,
            service_account=args.train_service_account,
            image=args.train_image,
            cpu=args.train_cpu,
            memory=args.train_memory,
            runtime=args.train_runtime,
            runtime_kind=args.train_runtime_kind,
        ),
        data_retries=args.data_retries,
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run parameters")
    g.add_argument("--raw-uri", help="raw SA-V videos (gs://, s3://, minio://, or a PVC path)")
    g.add_argument("--registry-uri", help="model registry URL")
    g.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any pipeline parameter (repeatable), e.g. -p dataset_version=2026-11 -p num_nodes=4; "
        "names: raw_uri registry_uri dataset_name dataset_version model_name init_checkpoint experiment "
        "overrides num_nodes nproc_per_node gpus_per_process max_steps train_timeout_hours min_jf_gain "
        "launcher_backend storage_root every val_fraction shard_size_mb eval_max_videos",
    )


def _coerce(kind: str, name: str, value: str) -> Any:
    try:
        if kind == "Integer":
            return int(value)
        if kind == "Float":
            return float(value)
        if kind == "Boolean":
            return value.lower() in ("1", "true", "yes")
    except ValueError:
        raise InputError(
            f"--param {name}={value!r}: not a valid {kind}; give a {kind.lower()} value"
        ) from None
    return value


def run_parameters(args: argparse.Namespace, *, required: bool = True) -> dict[str, Any]:
    """Pipeline arguments from --raw-uri/--registry-uri/--param, typed like the pipeline's inputs."""
    from pipelines.finetune import finetune_pipeline

    inputs = finetune_pipeline.component_spec.inputs or {}
    out: dict[str, Any] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or name not in inputs:
            raise InputError(
                f"--param {item!r}: unknown parameter or missing '='; use NAME=VALUE with NAME "
                f"one of {', '.join(inputs)}"
            )
        out[name] = _coerce(str(inputs[name].type), name, value)
    if args.raw_uri:
        out["raw_uri"] = args.raw_uri
    if args.registry_uri:
        out["registry_uri"] = args.registry_uri
    missing = [n for n in ("raw_uri", "registry_uri") if required and n not in out]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise InputError(f"{flags} missing; give {flags} (or -p {missing[0]}=URL)")
    return out
