"""Render the Kubeflow ``PyTorchJob`` (``kubeflow.org/v1``) that runs ``sam2kf train``.

This module is pure: it builds plain dicts and touches no cluster. It renders a
:class:`~sam2_core.launch.spec.LaunchSpec` (the settings) for one
:class:`~sam2_core.launch.spec.JobRun` (name, run id, data); the ``pytorchjob`` engine
(:mod:`sam2_core.launch.engines`), the kustomize manifests (``python -m
sam2_core.launch.render_manifests``) and the tests all render through :func:`render_pytorchjob`,
so there is exactly one definition of what a training job looks like.

Shape of the rendered job (``num_nodes`` = N):

* ``Master`` x 1 and ``Worker`` x N-1 (no Worker spec when N == 1), identical pod templates;
* one container named ``pytorch`` (the operator requires that name) running
  ``torchrun --nproc-per-node=M --no-python sam2kf train <overrides>``. The node count, node
  rank and rendezvous address are *not* on the command line: the Training Operator injects
  ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``PET_MASTER_PORT`` (static) or
  ``PET_RDZV_*`` (elastic) and torchrun reads any ``PET_<ARG>`` as the default of ``--<arg>``;
* Pod Security Standard "restricted" security context and a read-only root filesystem, with
  writable emptyDirs for ``/tmp``, a cache dir and a memory-backed ``/dev/shm`` (DataLoader
  workers share batches through it; the container runtime's 64 MiB default is far too small).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sam2_core.launch.pods import (
    container_env,
    container_resources,
    image_of,
    job_annotations,
    job_labels,
    pod_volumes,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from sam2_core.launch.spec import (
    JobRun,
    LaunchSpec,
    image_is_pinned,
    is_dns1035_label,
    train_command,
)

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
#: The Training Operator only wires the rendezvous env into the container with this name.
CONTAINER_NAME = "pytorch"
#: Port the operator's defaulting uses for ``pytorchjob-port``; declared explicitly for clarity.
MASTER_PORT = 23456


def _check(spec: LaunchSpec, name: str, image: str) -> None:
    spec.check()
    if not is_dns1035_label(name):
        raise ValueError(f"PyTorchJob name {name!r} is not a DNS-1035 label (<= 63 chars)")
    if not image_is_pinned(image):
        raise ValueError(f"image {image!r} must be pinned by a version tag or digest")
    if spec.elastic:
        lo, hi = spec.elastic_min_nodes, spec.elastic_max_nodes
        if lo is None or hi is None or not 1 <= lo <= spec.num_nodes <= hi:
            raise ValueError(
                "elastic training needs elastic_min_nodes <= num_nodes <= elastic_max_nodes"
            )
        if spec.num_nodes < 2:
            # The operator rejects an elasticPolicy without a Worker replica spec.
            raise ValueError("elastic training needs num_nodes >= 2 (a Master and a Worker)")


def _container(spec: LaunchSpec, run: JobRun) -> dict[str, Any]:
    _, mounts = pod_volumes(spec)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image_of(spec),
        "imagePullPolicy": spec.image_pull_policy,
        "command": train_command(spec, run),
        "env": container_env(spec),
        "ports": [{"name": "pytorchjob-port", "containerPort": MASTER_PORT, "protocol": "TCP"}],
        "resources": container_resources(spec),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": mounts,
    }
    if spec.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in spec.env_from_secrets]
    return container


def wait_command(path: str, *, timeout_hours: float) -> list[str]:
    """The wait-for-data init container's command (``sam2kf retrain wait``)."""
    timeout = str(int(timeout_hours * 3600))
    return ["sam2kf", "retrain", "wait", "--path", path, "--timeout", timeout]


def _wait_container(spec: LaunchSpec, run: JobRun) -> dict[str, Any]:
    main = _container(spec, run)
    return {
        "name": "wait-for-data",
        "image": main["image"],
        "imagePullPolicy": spec.image_pull_policy,
        "command": wait_command(str(run.wait_for), timeout_hours=spec.wait_timeout_hours),
        "env": main["env"],
        **({"envFrom": main["envFrom"]} if "envFrom" in main else {}),
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": restricted_container_security_context(),
        "volumeMounts": main["volumeMounts"],
    }


def _pod_template(spec: LaunchSpec, run: JobRun) -> dict[str, Any]:
    volumes, _ = pod_volumes(spec)
    pod: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        # The trainer talks to object stores with its own credentials, never to the API server.
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security_context(),
        "containers": [_container(spec, run)],
        "volumes": volumes,
    }
    if run.wait_for:
        pod["initContainers"] = [_wait_container(spec, run)]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    # Kubeflow profile namespaces usually inject an Istio sidecar, which keeps a finished
    # training pod Running forever (and is not restricted-profile compliant): opt out.
    annotations = {"sidecar.istio.io/inject": "false", **job_annotations(spec, run)}
    return {
        "metadata": {"labels": job_labels(spec), "annotations": annotations},
        "spec": pod,
    }


def _run_policy(spec: LaunchSpec) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "cleanPodPolicy": spec.clean_pod_policy,
        "backoffLimit": spec.backoff_limit,
    }
    if spec.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    if spec.timeout_s is not None:
        policy["activeDeadlineSeconds"] = int(spec.timeout_s)
    return policy


def _elastic_policy(spec: LaunchSpec, name: str) -> dict[str, Any]:
    # The c10d rendezvous store lives on the Master pod (stable name <job>-master-0), so the
    # job keeps "one Master + Workers" and the launcher can always follow the Master's log.
    return {
        "minReplicas": spec.elastic_min_nodes,
        "maxReplicas": spec.elastic_max_nodes,
        "maxRestarts": spec.elastic_max_restarts,
        "rdzvBackend": spec.rdzv_backend,
        "rdzvHost": f"{name}-master-0",
        "rdzvPort": MASTER_PORT,
        "rdzvId": name,
    }


def render_pytorchjob(spec: LaunchSpec, run: JobRun) -> dict[str, Any]:
    """Return the PyTorchJob of ``run`` under ``spec`` as a plain dict (``kubeflow.org/v1``).

    Raises ValueError for settings the operator or the cluster would reject (bad name,
    unpinned image, inconsistent elastic bounds).
    """
    name = run.job_name
    _check(spec, name, image_of(spec))
    replica_specs: dict[str, Any] = {
        "Master": {
            "replicas": 1,
            "restartPolicy": spec.restart_policy,
            "template": _pod_template(spec, run),
        }
    }
    workers = spec.num_nodes - 1
    if workers > 0:
        replica_specs["Worker"] = {
            "replicas": workers,
            "restartPolicy": spec.restart_policy,
            "template": _pod_template(spec, run),
        }
    job_spec: dict[str, Any] = {
        "nprocPerNode": str(spec.nproc_per_node),
        "runPolicy": _run_policy(spec),
        "pytorchReplicaSpecs": replica_specs,
    }
    if spec.elastic:
        job_spec["elasticPolicy"] = _elastic_policy(spec, name)
    metadata: dict[str, Any] = {"name": name, "labels": job_labels(spec)}
    if spec.namespace:
        metadata["namespace"] = spec.namespace
    annotations = job_annotations(spec, run)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": job_spec}


def replica_counts(job: Mapping[str, Any]) -> dict[str, int]:
    """{"Master": 1, "Worker": N-1} of a rendered job (handy for launchers and tests)."""
    specs = job.get("spec", {}).get("pytorchReplicaSpecs", {})
    return {k: int(v.get("replicas", 1)) for k, v in specs.items()}
