"""Generate the PyTorchJob and its ConfigMap in ``manifests/overlays/*`` from one definition.

The committed ``pytorchjob.yaml`` and ``train-config.yaml`` of each overlay are *outputs* of
this module: the one-off PyTorchJob is exactly :func:`render_pytorchjob` of the overlay's
launch spec, and the ConfigMap carries the same spec (``launch.json``) for the CronJob
(``sam2kf retrain cron``), which renders its per-run jobs through the same function. A test
fails when the committed files differ from what this module renders.

    python -m sam2_core.launch.render_manifests            # rewrite manifests/overlays/*/
    python -m sam2_core.launch.render_manifests --check    # exit 1 if anything is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sam2_core import image_ref
from sam2_core.launch.images import IMAGE_REPO_ENV, IMAGE_TAG_ENV, ImageSettings
from sam2_core.launch.pytorchjob import render_pytorchjob
from sam2_core.launch.spec import JobRun, LaunchSpec
from sam2_core.launch.trainjob import render_training_runtime, render_trainjob

#: Where the base's data Job writes shards and the one-off job reads them (PVC paths).
SHARDS = "/data/datasets/v1"
PVC_CLAIM = "sam2kf-data"
CONFIGMAP_NAME = "sam2kf-train-config"
ONE_OFF_JOB_NAME = "sam2kf-finetune"

_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dataclass
class Overlay:
    """Settings of one kustomize overlay."""

    name: str
    namespace: str
    job: dict[str, Any]
    overrides: list[str]
    retrain: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "/data/runs/finetune"
    #: Repository and tag of the images (``--image-repo/--image-tag`` of this module's CLI).
    images: ImageSettings = field(default_factory=ImageSettings)

    def spec(self) -> LaunchSpec:
        """The overlay's launch spec (the one-off job's namespace; scheduled runs use theirs)."""
        job = {**self.job, "image": self.images.retarget(self.job["image"])}
        return LaunchSpec(namespace=self.namespace, overrides=list(self.overrides), **job)

    def one_off_run(self) -> JobRun:
        """The one-off fine-tuning job: waits for the data Job's shards, then trains on them."""
        return JobRun(
            name=ONE_OFF_JOB_NAME,
            train_args=[f"data.shards={SHARDS}", f"trainer.output_dir={self.output_dir}"],
            wait_for=f"{SHARDS}/manifest.json",
        )


OVERLAYS: dict[str, Overlay] = {
    "dev": Overlay(
        name="dev",
        namespace="sam2kf-dev",
        job={
            "engine": "pytorchjob",
            # The CPU ("data") image has CPU torch and trains the tiny model on one node.
            "image": image_ref(flavour="data"),
            "num_nodes": 1,
            "nproc_per_node": 2,
            "gpus_per_process": 0,
            "cpu": "2",
            "memory": "8Gi",
            "shm_size": "1Gi",
            "tmp_size": "2Gi",
            "cache_size": "2Gi",
            "pvc_claim": PVC_CLAIM,
            "backoff_limit": 2,
            "ttl_seconds_after_finished": 24 * 3600,
            "timeout_hours": 6.0,
            "labels": {"sam2kf.io/overlay": "dev"},
        },
        overrides=["model=tiny", "experiment=smoke", "trainer.device=cpu", "trainer.max_steps=50"],
        retrain={"raw": "/data/raw"},
        output_dir="/data/runs/finetune-dev",
    ),
    "prod": Overlay(
        name="prod",
        namespace="sam2kf",
        job={
            "engine": "pytorchjob",
            "image": image_ref(flavour="train"),
            "num_nodes": 2,
            "nproc_per_node": 8,
            "gpus_per_process": 1,
            "cpu": "96",
            # /dev/shm is memory-backed and counts against this limit.
            "memory": "900Gi",
            "shm_size": "128Gi",
            "cache_size": "50Gi",
            "pvc_claim": PVC_CLAIM,
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [_GPU_TOLERATION],
            "backoff_limit": 3,
            "ttl_seconds_after_finished": 7 * 24 * 3600,
            "timeout_hours": 72.0,
            "labels": {"sam2kf.io/overlay": "prod"},
        },
        overrides=[
            "model=sam2.1_hiera_b+",
            "experiment=sav_finetune",
            "model.checkpoint=/data/checkpoints/sam2.1_hiera_base_plus.pt",
            "trainer.device=cuda",
        ],
        retrain={"raw": "/data/raw"},
        output_dir="/data/runs/finetune-prod",
    ),
}


def _header(lines: list[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (``|``) so ConfigMap files stay readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def _dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100)


def pytorchjob_yaml(overlay: Overlay) -> str:
    """The overlay's ``pytorchjob.yaml`` text (header comments + rendered job)."""
    ns, name = overlay.namespace, ONE_OFF_JOB_NAME
    header = _header(
        [
            f"GENERATED by `python -m sam2_core.launch.render_manifests` from OVERLAYS[{overlay.name!r}];",
            "do not edit by hand (tests/k8s/test_manifests.py checks it is up to date).",
            f"One-off fine-tune: {overlay.spec().num_nodes} node(s) x "
            f"{overlay.spec().nproc_per_node} process(es); starts training once "
            f"{SHARDS}/manifest.json exists.",
            f"apply:    kubectl apply -k manifests/overlays/{overlay.name}",
            f"check:    kubectl -n {ns} get pytorchjob {name} -o wide",
            f"          kubectl -n {ns} get pods -l training.kubeflow.org/job-name={name}",
            f"logs:     kubectl -n {ns} logs -f {name}-master-0 -c pytorch",
            f"clean up: kubectl -n {ns} delete pytorchjob {name}",
        ]
    )
    return header + _dump(render_pytorchjob(overlay.spec(), overlay.one_off_run()))


def configmap_yaml(overlay: Overlay) -> str:
    """The overlay's ``train-config.yaml``: settings the CronJob renders its jobs from."""
    ns = overlay.namespace
    retrain: dict[str, Any] = {
        "raw": "/data/raw",
        "work_root": "/data/work",
        "output_root": "/data/runs",
    }
    retrain.update(
        {
            "kfp_host": "",
            "submit_args": [],
            "poll_s": 30.0,
            **overlay.retrain,
        }
    )
    # The CronJob creates its jobs in its own namespace ($POD_NAMESPACE).
    launch = {**overlay.spec().to_dict(), "namespace": ""}
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP_NAME,
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/name": "sam2-kubeflow",
                "sam2kf.io/overlay": overlay.name,
            },
        },
        "data": {
            "launch.json": json.dumps(launch, indent=2, sort_keys=True) + "\n",
            "retrain.json": json.dumps(retrain, indent=2, sort_keys=True) + "\n",
        },
    }
    header = _header(
        [
            f"GENERATED by `python -m sam2_core.launch.render_manifests` from OVERLAYS[{overlay.name!r}];",
            "do not edit by hand. Read by the CronJob sam2kf-retrain (mounted at /etc/sam2kf):",
            "launch.json = the launch spec (sam2_core.launch.spec.LaunchSpec, Hydra overrides",
            "included); retrain.json = data locations; set kfp_host (+ submit_args) to submit to KFP.",
            f"apply:    kubectl apply -k manifests/overlays/{overlay.name}",
            f"check:    kubectl -n {ns} get configmap {CONFIGMAP_NAME} -o yaml",
            f"logs:     kubectl -n {ns} logs job/<sam2kf-retrain-...> (the CronJob's runs use it)",
            f"clean up: kubectl -n {ns} delete configmap {CONFIGMAP_NAME}",
        ]
    )
    return header + _dump(cm)


#: Launcher permissions on a Trainer v2 cluster (the base Role holds the PyTorchJob ones):
#: TrainJobs, their pods and logs, and ``get`` on the one runtime the overlays name (the launcher
#: checks that it exists before creating a job). The stock ClusterTrainingRuntime is
#: cluster-scoped: naming it instead needs a ClusterRole with ``get`` on
#: ``clustertrainingruntimes`` (README, "Run on Kubernetes").
TRAINER_ROLE_RULES = [
    {
        "apiGroups": ["trainer.kubeflow.org"],
        "resources": ["trainjobs"],
        "verbs": ["create", "get", "delete"],
    },
    {
        "apiGroups": ["trainer.kubeflow.org"],
        "resources": ["trainingruntimes"],
        "resourceNames": [LaunchSpec().runtime],
        "verbs": ["get"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def trainer_overlay_name(name: str) -> str:
    return f"{name}-trainer"


def trainer_spec(overlay: Overlay) -> LaunchSpec:
    return LaunchSpec.from_dict({**overlay.spec().to_dict(), "engine": "trainjob"})


def trainjob_yaml(overlay: Overlay) -> str:
    """The Trainer v2 variant's ``trainjob.yaml``: the runtime and a suspended one-off TrainJob."""
    ns, name = overlay.namespace, ONE_OFF_JOB_NAME
    spec = trainer_spec(overlay)
    run = overlay.one_off_run()
    # A TrainJob has no place for a wait-for-data init container: it is created suspended and
    # resumed once the data Job has written the shards.
    job = render_trainjob(spec, JobRun(name=run.name, train_args=run.train_args))
    job["spec"]["suspend"] = True
    header = _header(
        [
            f"GENERATED by `python -m sam2_core.launch.render_manifests` from OVERLAYS[{overlay.name!r}];",
            "do not edit by hand (tests/k8s/test_manifests.py checks it is up to date).",
            f"Kubeflow Trainer v2: the TrainingRuntime {spec.runtime} and a one-off fine-tune of "
            f"{spec.num_nodes} node(s) x {spec.nproc_per_node} process(es), created suspended.",
            f"apply:    kubectl apply -k manifests/storage/{overlay.name} && kubectl apply -k "
            f"manifests/overlays/{trainer_overlay_name(overlay.name)}",
            f"resume:   kubectl -n {ns} wait --for=condition=complete job/sam2kf-extract-shard "
            f"--timeout=6h && kubectl -n {ns} patch trainjob {name} --type merge "
            """-p '{"spec":{"suspend":false}}'""",
            f"check:    kubectl -n {ns} get trainjob {name} ; kubectl -n {ns} get pods "
            f"-l jobset.sigs.k8s.io/jobset-name={name}",
            f"logs:     kubectl -n {ns} logs -f -l jobset.sigs.k8s.io/jobset-name={name},"
            "batch.kubernetes.io/job-completion-index=0",
            f"clean up: kubectl -n {ns} delete trainjob {name}",
        ]
    )
    runtime = render_training_runtime(spec, name=spec.runtime)
    return header + _dump(runtime) + "---\n" + _dump(job)


def trainer_config_patch_yaml(overlay: Overlay) -> str:
    """The Trainer v2 variant's ConfigMap patch: the same launch spec with engine trainjob."""
    launch = {**trainer_spec(overlay).to_dict(), "namespace": ""}
    patch = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP_NAME, "namespace": overlay.namespace},
        "data": {"launch.json": json.dumps(launch, indent=2, sort_keys=True) + "\n"},
    }
    header = _header(
        [
            f"GENERATED by `python -m sam2_core.launch.render_manifests` from OVERLAYS[{overlay.name!r}];",
            "do not edit by hand. The CronJob's launch spec with engine trainjob (a strategic merge",
            f"patch over {CONFIGMAP_NAME} of the base overlay).",
            f"apply:    kubectl apply -k manifests/storage/{overlay.name} && kubectl apply -k "
            f"manifests/overlays/{trainer_overlay_name(overlay.name)}",
            f"check:    kubectl -n {overlay.namespace} get configmap {CONFIGMAP_NAME} -o yaml",
            f"logs:     kubectl -n {overlay.namespace} logs job/<sam2kf-retrain-...>",
            f"clean up: kubectl -n {overlay.namespace} delete configmap {CONFIGMAP_NAME}",
        ]
    )
    return header + _dump(patch)


def trainer_kustomization_yaml(overlay: Overlay) -> str:
    """The Trainer v2 variant of an overlay: the overlay, its PyTorchJob replaced by the
    TrainingRuntime + TrainJob, the CronJob's engine set to trainjob, the launcher's Role
    granting the TrainJob permissions instead of the PyTorchJob ones."""
    ns, name = overlay.namespace, trainer_overlay_name(overlay.name)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns,
        "resources": [f"../{overlay.name}", "trainjob.yaml"],
        "patches": [
            {"path": "train-config-patch.yaml"},
            {
                "target": {"kind": "PyTorchJob", "name": ONE_OFF_JOB_NAME},
                "patch": (
                    "$patch: delete\napiVersion: kubeflow.org/v1\nkind: PyTorchJob\n"
                    f"metadata:\n  name: {ONE_OFF_JOB_NAME}\n"
                ),
            },
            {
                "target": {"kind": "Role", "name": "sam2kf-launcher"},
                "patch": yaml.safe_dump(
                    [{"op": "replace", "path": "/rules", "value": TRAINER_ROLE_RULES}],
                    sort_keys=False,
                ),
            },
        ],
    }
    header = _header(
        [
            f"GENERATED by `python -m sam2_core.launch.render_manifests` from OVERLAYS[{overlay.name!r}];",
            f"do not edit by hand. The {overlay.name} overlay on Kubeflow Trainer v2 (TrainJob) "
            "instead of the Training Operator v1 (PyTorchJob).",
            f"apply:    kubectl apply -k manifests/storage/{overlay.name} && kubectl apply -k "
            f"manifests/overlays/{name}",
            f"check:    kubectl kustomize manifests/overlays/{name} ; kubectl -n {ns} get "
            "jobs,trainjobs,trainingruntimes,pods",
            f"logs:     kubectl -n {ns} logs -f job/sam2kf-extract-shard",
            f"clean up: kubectl delete -k manifests/overlays/{name}   (keeps the namespace "
            f"and the PVC: manifests/storage/{overlay.name})",
        ]
    )
    return header + _dump(kustomization)


def rendered_files(root: Path, *, images: ImageSettings | None = None) -> dict[Path, str]:
    """{path: text} of every generated file under ``root`` (the ``manifests`` folder), its
    images in ``images`` (default: the released, versioned names)."""
    out: dict[Path, str] = {}
    for name, base in OVERLAYS.items():
        overlay = dataclasses.replace(base, images=images or ImageSettings())
        d = root / "overlays" / name
        out[d / "pytorchjob.yaml"] = pytorchjob_yaml(overlay)
        out[d / "train-config.yaml"] = configmap_yaml(overlay)
        t = root / "overlays" / trainer_overlay_name(name)
        out[t / "kustomization.yaml"] = trainer_kustomization_yaml(overlay)
        out[t / "trainjob.yaml"] = trainjob_yaml(overlay)
        out[t / "train-config-patch.yaml"] = trainer_config_patch_yaml(overlay)
    return out


def default_root() -> Path:
    return Path(__file__).resolve().parents[2] / "manifests"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sam2_core.launch.render_manifests",
        description="Write the generated PyTorchJob and ConfigMap of each manifests/ overlay.",
    )
    parser.add_argument("--root", type=Path, default=default_root(), help="manifests folder")
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    parser.add_argument(
        "--image-repo",
        default="",
        help=f"image repository of the generated jobs, runtimes and ConfigMaps (default "
        f"${IMAGE_REPO_ENV}, else {ImageSettings().repository}); then point the base's Job and "
        "CronJob at it with `kustomize edit set image` (README)",
    )
    parser.add_argument(
        "--image-tag",
        default="",
        help=f"image tag without -data/-train (default ${IMAGE_TAG_ENV}, else the version)",
    )
    args = parser.parse_args(argv)
    try:
        images = ImageSettings.from_env(repository=args.image_repo, tag=args.image_tag)
    except ValueError as exc:
        parser.error(str(exc))
    stale = []
    for path, text in rendered_files(args.root, images=images).items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        print("run: python -m sam2_core.launch.render_manifests", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
