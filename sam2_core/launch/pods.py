"""Pod pieces every cluster engine renders alike: labels, env, resources, the Pod Security
"restricted" contexts and the writable scratch mounts on top of a read-only root filesystem.

One definition, so that a PyTorchJob's pods and a TrainJob's pods of the same launch spec are
the same pods.
"""

from __future__ import annotations

from typing import Any

from sam2_core import __version__, image_ref
from sam2_core.launch.spec import RUN_ID_ANNOTATION, JobRun, LaunchSpec

#: Numeric UID/GID of the non-root user baked into the images (images/*.Dockerfile).
RUN_AS_USER = 1000
RUN_AS_GROUP = 1000
#: Writable mounts on top of the read-only root filesystem.
TMP_DIR = "/tmp"
CACHE_DIR = "/cache"
SHM_DIR = "/dev/shm"
GPU_RESOURCE = "nvidia.com/gpu"


def job_labels(spec: LaunchSpec) -> dict[str, str]:
    base = {
        "app.kubernetes.io/name": "sam2-kubeflow",
        "app.kubernetes.io/component": "train",
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "sam2kf",
    }
    return {**base, **spec.labels}


def container_env(spec: LaunchSpec) -> list[dict[str, Any]]:
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


def container_resources(spec: LaunchSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus_per_node:
        # Extended resources must have request == limit; setting the limit alone implies it.
        limits[GPU_RESOURCE] = str(spec.gpus_per_node)
        requests[GPU_RESOURCE] = str(spec.gpus_per_node)
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


def image_of(spec: LaunchSpec) -> str:
    """The spec's image, or this version's training image when it names none."""
    return spec.image or image_ref(flavour="train")


def job_annotations(spec: LaunchSpec, run: JobRun) -> dict[str, str]:
    # The launcher compares the run id on a create conflict, to attach only to its own run's job.
    return {**spec.annotations, **({RUN_ID_ANNOTATION: run.run_id} if run.run_id else {})}


def pod_volumes(spec: LaunchSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) of a training pod: the scratch mounts, then the data PVC."""
    volumes, mounts = scratch_volumes(
        tmp_size=spec.tmp_size, cache_size=spec.cache_size, shm_size=spec.shm_size
    )
    if spec.pvc_claim:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": spec.pvc_claim}})
        mounts.append({"name": "data", "mountPath": spec.pvc_mount_path})
    return volumes, mounts
