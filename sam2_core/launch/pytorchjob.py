"""Render the Kubeflow ``PyTorchJob`` (``kubeflow.org/v1``) that runs ``sam2kf train``.

This module is pure: it builds plain dicts and touches no cluster. The KFP launcher
(:mod:`sam2_core.launch.launcher`), the kustomize manifests (``python -m
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

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sam2_core import __version__

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
#: The Training Operator only wires the rendezvous env into the container with this name.
CONTAINER_NAME = "pytorch"
#: Port the operator's defaulting uses for ``pytorchjob-port``; declared explicitly for clarity.
MASTER_PORT = 23456
#: Numeric UID/GID of the non-root user baked into the images (images/*.Dockerfile).
RUN_AS_USER = 1000
RUN_AS_GROUP = 1000
#: Writable mounts on top of the read-only root filesystem.
TMP_DIR = "/tmp"
CACHE_DIR = "/cache"
SHM_DIR = "/dev/shm"
#: Longest job name we hand out: the operator derives pod and Service names such as
#: ``<job>-worker-15`` from it, and a Service name must itself be a <= 63-char DNS-1035 label.
MAX_JOB_NAME_LEN = 48

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_GPU_RESOURCE = "nvidia.com/gpu"


@dataclass
class PyTorchJobSpec:
    """Everything that varies between training jobs; defaults suit a small CPU job.

    ``train_args`` are Hydra overrides for ``sam2kf train`` (e.g. ``["model=tiny",
    "data.shards=gs://b/ds/v1", "trainer.output_dir=gs://b/runs/r1"]``). ``num_nodes`` counts
    pods (Master + Workers); ``nproc_per_node`` processes run in each pod, one per GPU when
    ``gpus_per_node`` > 0. Elastic training is enabled by ``elastic_min_nodes`` /
    ``elastic_max_nodes`` (total pod counts, Master included).
    """

    name: str
    image: str
    train_args: list[str] = field(default_factory=list)
    namespace: str = "default"
    num_nodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    env: dict[str, str] = field(default_factory=dict)
    #: env var name -> (Secret name, key): storage credentials without putting them in the spec.
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Secrets whose every key becomes an env var (``envFrom``), e.g. an S3/MinIO credential set.
    env_from_secrets: list[str] = field(default_factory=list)
    service_account: str = "sam2kf-trainer"
    pvc_claim: str | None = None
    pvc_mount_path: str = "/data"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    shm_size: str = "16Gi"
    cache_size: str = "20Gi"
    tmp_size: str = "10Gi"
    elastic_min_nodes: int | None = None
    elastic_max_nodes: int | None = None
    elastic_max_restarts: int = 3
    rdzv_backend: str = "c10d"
    restart_policy: str = "OnFailure"
    backoff_limit: int = 3
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600
    clean_pod_policy: str = "Running"
    active_deadline_seconds: int | None = None
    image_pull_policy: str = "IfNotPresent"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    priority_class_name: str | None = None
    #: If set, an init container waits until this URL/path exists (e.g. the shards'
    #: ``manifest.json``), so a job applied together with its data Job starts training only
    #: once the data is complete instead of crash-looping through its backoffLimit.
    wait_for: str | None = None
    wait_timeout_s: int = 6 * 3600

    @property
    def elastic(self) -> bool:
        return self.elastic_min_nodes is not None or self.elastic_max_nodes is not None


def job_name_for_run(
    run_id: str, prefix: str = "sam2-train", *, max_len: int = MAX_JOB_NAME_LEN
) -> str:
    """Return a stable DNS-1035 job name for a pipeline run (``<prefix>-<run-id>-<hash8>``).

    The same ``run_id`` always gives the same name, so a retried launcher step finds (and
    attaches to) the job it created before instead of starting a second one. The run id is
    lower-cased, anything outside ``[a-z0-9-]`` becomes ``-``, and it is truncated to fit
    ``max_len`` (<= 63; default 48 to leave room for the operator's ``-worker-N`` suffixes).
    The hash is taken over the untouched ``run_id``, so ids that sanitise alike stay distinct.
    """
    if not 20 <= max_len <= 63:
        raise ValueError(f"max_len must be within 20..63, got {max_len}")
    if not _DNS1035.match(prefix):
        raise ValueError(f"job name prefix {prefix!r} is not a DNS-1035 label ([a-z][-a-z0-9]*)")
    if not run_id:
        raise ValueError("run_id must not be empty")
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:8]
    body = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    room = max_len - len(prefix) - len(digest) - 2
    if room < 0:
        raise ValueError(f"job name prefix {prefix!r} is too long for max_len={max_len}")
    body = body[:room].strip("-")
    name = "-".join(p for p in (prefix, body, digest) if p)
    assert _DNS1035.match(name) and len(name) <= max_len, name
    return name


def torchrun_command(spec: PyTorchJobSpec) -> list[str]:
    """The container's full command: torchrun wrapping the ``sam2kf train`` console script.

    ``--no-python`` makes torchrun exec ``sam2kf`` directly (it is a console script, not a .py
    file). Rendezvous comes from the operator's ``PET_*`` env (see module docstring).
    """
    return [
        "torchrun",
        f"--nproc-per-node={spec.nproc_per_node}",
        "--no-python",
        "sam2kf",
        "train",
        *spec.train_args,
    ]


def image_is_pinned(image: str) -> bool:
    """True for ``repo:tag`` (tag not ``latest``) or ``repo@sha256:...`` references."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def _check(spec: PyTorchJobSpec) -> None:
    if not _DNS1035.match(spec.name) or len(spec.name) > 63:
        raise ValueError(f"PyTorchJob name {spec.name!r} is not a DNS-1035 label (<= 63 chars)")
    if not image_is_pinned(spec.image):
        raise ValueError(f"image {spec.image!r} must be pinned by a version tag or digest")
    if spec.num_nodes < 1 or spec.nproc_per_node < 1:
        raise ValueError("num_nodes and nproc_per_node must be >= 1")
    if spec.gpus_per_node < 0:
        raise ValueError("gpus_per_node must be >= 0")
    if spec.gpus_per_node and spec.nproc_per_node > spec.gpus_per_node:
        raise ValueError(
            f"nproc_per_node={spec.nproc_per_node} exceeds gpus_per_node={spec.gpus_per_node}"
        )
    if spec.elastic:
        lo, hi = spec.elastic_min_nodes, spec.elastic_max_nodes
        if lo is None or hi is None or not 1 <= lo <= spec.num_nodes <= hi:
            raise ValueError(
                "elastic training needs elastic_min_nodes <= num_nodes <= elastic_max_nodes"
            )
        if spec.num_nodes < 2:
            # The operator rejects an elasticPolicy without a Worker replica spec.
            raise ValueError("elastic training needs num_nodes >= 2 (a Master and a Worker)")


def _labels(spec: PyTorchJobSpec) -> dict[str, str]:
    base = {
        "app.kubernetes.io/name": "sam2-kubeflow",
        "app.kubernetes.io/component": "train",
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "sam2kf",
    }
    return {**base, **spec.labels}


def _env(spec: PyTorchJobSpec) -> list[dict[str, Any]]:
    # The root filesystem is read-only: point every cache at the writable emptyDirs. User env
    # comes last so it can override these.
    defaults = {
        "HOME": TMP_DIR,
        "XDG_CACHE_HOME": CACHE_DIR,
        "TORCH_HOME": f"{CACHE_DIR}/torch",
        "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
        "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_DIR}/inductor",
        "MPLCONFIGDIR": f"{TMP_DIR}/matplotlib",
    }
    merged = {**defaults, **spec.env}
    out: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(merged.items())]
    for var, (secret, key) in sorted(spec.secret_env.items()):
        out.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return out


def _resources(spec: PyTorchJobSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus_per_node:
        # Extended resources must have request == limit; setting the limit alone implies it.
        limits[_GPU_RESOURCE] = str(spec.gpus_per_node)
        requests[_GPU_RESOURCE] = str(spec.gpus_per_node)
    return {"requests": requests, "limits": limits}


def restricted_container_security_context() -> dict[str, Any]:
    """Container securityContext meeting the Pod Security Standard "restricted" profile."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security_context() -> dict[str, Any]:
    """Pod securityContext for the "restricted" profile; fsGroup makes PVCs writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volumes(
    *, tmp_size: str, cache_size: str, shm_size: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) for /tmp, the cache dir and optionally a memory-backed /dev/shm."""
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}},
        {"name": "cache", "emptyDir": {"sizeLimit": cache_size}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": TMP_DIR},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    if shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
        mounts.append({"name": "dshm", "mountPath": SHM_DIR})
    return volumes, mounts


def _container(spec: PyTorchJobSpec) -> dict[str, Any]:
    _, mounts = scratch_volumes(
        tmp_size=spec.tmp_size, cache_size=spec.cache_size, shm_size=spec.shm_size
    )
    if spec.pvc_claim:
        mounts.append({"name": "data", "mountPath": spec.pvc_mount_path})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": torchrun_command(spec),
        "env": _env(spec),
        "ports": [{"name": "pytorchjob-port", "containerPort": MASTER_PORT, "protocol": "TCP"}],
        "resources": _resources(spec),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": mounts,
    }
    if spec.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in spec.env_from_secrets]
    return container


def _wait_container(spec: PyTorchJobSpec) -> dict[str, Any]:
    main = _container(spec)
    return {
        "name": "wait-for-data",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": [
            "python",
            "-m",
            "sam2_core.launch.retrain",
            "wait",
            "--path",
            str(spec.wait_for),
            "--timeout",
            str(spec.wait_timeout_s),
        ],
        "env": main["env"],
        **({"envFrom": main["envFrom"]} if "envFrom" in main else {}),
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": restricted_container_security_context(),
        "volumeMounts": main["volumeMounts"],
    }


def _pod_template(spec: PyTorchJobSpec) -> dict[str, Any]:
    volumes, _ = scratch_volumes(
        tmp_size=spec.tmp_size, cache_size=spec.cache_size, shm_size=spec.shm_size
    )
    if spec.pvc_claim:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": spec.pvc_claim}})
    pod: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        # The trainer talks to object stores with its own credentials, never to the API server.
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security_context(),
        "containers": [_container(spec)],
        "volumes": volumes,
    }
    if spec.wait_for:
        pod["initContainers"] = [_wait_container(spec)]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    # Kubeflow profile namespaces usually inject an Istio sidecar, which keeps a finished
    # training pod Running forever (and is not restricted-profile compliant): opt out.
    annotations = {"sidecar.istio.io/inject": "false", **spec.annotations}
    return {
        "metadata": {"labels": _labels(spec), "annotations": annotations},
        "spec": pod,
    }


def _run_policy(spec: PyTorchJobSpec) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "cleanPodPolicy": spec.clean_pod_policy,
        "backoffLimit": spec.backoff_limit,
    }
    if spec.ttl_seconds_after_finished is not None:
        policy["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    if spec.active_deadline_seconds is not None:
        policy["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return policy


def _elastic_policy(spec: PyTorchJobSpec) -> dict[str, Any]:
    # The c10d rendezvous store lives on the Master pod (stable name <job>-master-0), so the
    # job keeps "one Master + Workers" and the launcher can always follow the Master's log.
    return {
        "minReplicas": spec.elastic_min_nodes,
        "maxReplicas": spec.elastic_max_nodes,
        "maxRestarts": spec.elastic_max_restarts,
        "rdzvBackend": spec.rdzv_backend,
        "rdzvHost": f"{spec.name}-master-0",
        "rdzvPort": MASTER_PORT,
        "rdzvId": spec.name,
    }


def render_pytorchjob(spec: PyTorchJobSpec) -> dict[str, Any]:
    """Return the PyTorchJob for ``spec`` as a plain dict (``kubeflow.org/v1``).

    Raises ValueError for settings the operator or the cluster would reject (bad name,
    unpinned image, more processes than GPUs, inconsistent elastic bounds).
    """
    _check(spec)
    replica_specs: dict[str, Any] = {
        "Master": {
            "replicas": 1,
            "restartPolicy": spec.restart_policy,
            "template": _pod_template(spec),
        }
    }
    workers = spec.num_nodes - 1
    if workers > 0:
        replica_specs["Worker"] = {
            "replicas": workers,
            "restartPolicy": spec.restart_policy,
            "template": _pod_template(spec),
        }
    job_spec: dict[str, Any] = {
        "nprocPerNode": str(spec.nproc_per_node),
        "runPolicy": _run_policy(spec),
        "pytorchReplicaSpecs": replica_specs,
    }
    if spec.elastic:
        job_spec["elasticPolicy"] = _elastic_policy(spec)
    metadata: dict[str, Any] = {"name": spec.name, "labels": _labels(spec)}
    if spec.namespace:
        metadata["namespace"] = spec.namespace
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": job_spec}


def replica_counts(job: Mapping[str, Any]) -> dict[str, int]:
    """{"Master": 1, "Worker": N-1} of a rendered job (handy for launchers and tests)."""
    specs = job.get("spec", {}).get("pytorchReplicaSpecs", {})
    return {k: int(v.get("replicas", 1)) for k, v in specs.items()}


def split_overrides(text: str | Sequence[str]) -> list[str]:
    """Hydra overrides from a whitespace/newline separated string (ConfigMap style) or a list."""
    if isinstance(text, str):
        out: list[str] = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.extend(shlex.split(line))
        return out
    return [str(t) for t in text]


#: Fields that identify one job rather than describe a kind of job (not part of job.json).
_PER_JOB_FIELDS = ("name", "train_args")


def spec_to_dict(spec: PyTorchJobSpec, *, per_job: bool = False) -> dict[str, Any]:
    """JSON-ready dict of a spec; without ``per_job`` the name and train_args are left out,
    which is what the manifests' ConfigMap (``job.json``) stores for scheduled runs."""
    out = {f.name: getattr(spec, f.name) for f in fields(spec)}
    out["secret_env"] = {k: list(v) for k, v in spec.secret_env.items()}
    if not per_job:
        for key in _PER_JOB_FIELDS:
            out.pop(key)
    return out


def spec_from_dict(data: Mapping[str, Any], **per_job: Any) -> PyTorchJobSpec:
    """Inverse of :func:`spec_to_dict`; ``per_job`` supplies name/train_args (or overrides).

    Unknown keys raise ValueError naming them, so a typo in a ConfigMap fails loudly.
    """
    known = {f.name for f in fields(PyTorchJobSpec)}
    merged = {**data, **per_job}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown PyTorchJobSpec field(s) {unknown}; known: {sorted(known)}")
    if "secret_env" in merged:
        merged["secret_env"] = {k: (str(v[0]), str(v[1])) for k, v in merged["secret_env"].items()}
    return PyTorchJobSpec(**merged)
