"""Render the Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) and the
project's ``TrainingRuntime`` that runs ``sam2kf train``.

Pure, like :mod:`sam2_core.launch.pytorchjob`, and built from the same pod pieces
(:mod:`sam2_core.launch.pods`): a launch spec and a run give the same command
(``torchrun --nproc-per-node=M --no-python sam2kf train ...``), resources, env and pod security
on either engine, only packaged for Trainer v2:

* ``spec.runtimeRef`` names the runtime (default: the namespaced ``TrainingRuntime``
  ``sam2kf-torch`` of ``manifests/``, :func:`render_training_runtime`; alternatively the stock
  ``ClusterTrainingRuntime`` ``torch-distributed``). Both run one replicated job ``node``
  whose container ``node`` gets ``PET_NNODES``/``PET_NODE_RANK``/``PET_MASTER_*`` from the
  torch plugin, which torchrun reads as the defaults of its flags;
* ``spec.trainer`` carries image, command, env (secrets by reference), ``numNodes``,
  ``numProcPerNode`` and ``resourcesPerNode``;
* the per-run pod settings (service account, node selector, tolerations, the "restricted"
  security contexts, ``/tmp``, the cache and a memory-backed ``/dev/shm``, the data PVC) go
  through ``spec.runtimePatches``: a stock runtime holds none of them, and what our runtime
  already holds merges by name with the same values;
* ``spec.activeDeadlineSeconds`` carries the timeout.

The controller runs a TrainJob as a JobSet of the same name; its pods carry the JobSet labels
that :data:`sam2_core.launch.launcher.TRAINJOB` selects.
"""

from __future__ import annotations

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

GROUP = "trainer.kubeflow.org"
API_VERSION = f"{GROUP}/v1alpha1"
KIND = "TrainJob"
RUNTIME_KINDS = ("TrainingRuntime", "ClusterTrainingRuntime")
#: The torch runtimes' replicated job and container (the torch plugin wires PET_* into it).
NODE = "node"
#: ``manager`` of our runtime patch (the list is keyed by it).
PATCH_MANAGER = "sam2kf.io/launcher"


def _check(spec: LaunchSpec, run: JobRun, name: str, image: str) -> None:
    spec.check()
    if not is_dns1035_label(name):
        raise ValueError(f"TrainJob name {name!r} is not a DNS-1035 label (<= 63 chars)")
    if not image_is_pinned(image):
        raise ValueError(f"image {image!r} must be pinned by a version tag or digest")
    if spec.runtime_kind not in RUNTIME_KINDS:
        raise ValueError(f"runtime_kind {spec.runtime_kind!r}: expected one of {RUNTIME_KINDS}")
    if not spec.runtime:
        raise ValueError("runtime: a TrainJob must name its runtime (e.g. sam2kf-torch)")
    if spec.elastic:
        raise ValueError("elastic training is a pytorchjob feature; the trainjob engine is static")
    if spec.env_from_secrets:
        raise ValueError(
            "env_from_secrets: a TrainJob's trainer has no envFrom; use secret_env "
            "(env var -> [Secret, key]) instead"
        )
    if run.wait_for:
        raise ValueError(
            "wait_for: a TrainJob cannot add a wait container; create it once the data exists "
            "(or suspended, and resume it then)"
        )


def _pod_patch(spec: LaunchSpec) -> dict[str, Any]:
    volumes, mounts = pod_volumes(spec)
    pod: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        "securityContext": restricted_pod_security_context(),
        "containers": [
            {
                "name": NODE,
                "securityContext": restricted_container_security_context(),
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    return pod


def render_trainjob(spec: LaunchSpec, run: JobRun) -> dict[str, Any]:
    """Return the TrainJob of ``run`` under ``spec`` as a plain dict.

    Raises ValueError for settings Trainer v2 cannot express or would reject (bad name,
    unpinned image, elastic bounds, envFrom secrets, a wait container, an unknown runtime kind).
    """
    name = run.job_name
    image = image_of(spec)
    _check(spec, run, name, image)
    trainer: dict[str, Any] = {
        "image": image,
        "command": train_command(spec, run),
        "env": container_env(spec),
        "numNodes": spec.num_nodes,
        "numProcPerNode": spec.nproc_per_node,
        "resourcesPerNode": container_resources(spec),
    }
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": spec.runtime_kind, "name": spec.runtime},
        "trainer": trainer,
        "runtimePatches": [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": NODE,
                                    "template": {"spec": {"template": {"spec": _pod_patch(spec)}}},
                                }
                            ]
                        }
                    }
                },
            }
        ],
    }
    if spec.timeout_s is not None:
        job_spec["activeDeadlineSeconds"] = int(spec.timeout_s)
    metadata: dict[str, Any] = {"name": name, "labels": job_labels(spec)}
    if spec.namespace:
        metadata["namespace"] = spec.namespace
    annotations = job_annotations(spec, run)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": job_spec}


def render_training_runtime(spec: LaunchSpec, *, name: str = "sam2kf-torch") -> dict[str, Any]:
    """The project's namespaced ``TrainingRuntime``: torch policy, one replicated job ``node``
    whose pods meet the "restricted" Pod Security profile, with a read-only root filesystem,
    the scratch mounts, a memory-backed ``/dev/shm`` and the data PVC of ``spec``.

    A TrainJob's ``trainer`` supplies image, command, env, node count and resources per run.
    """
    volumes, mounts = pod_volumes(spec)
    container = {
        "name": NODE,
        "image": image_of(spec),
        "imagePullPolicy": spec.image_pull_policy,
        "env": container_env(spec),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": mounts,
    }
    pod = {
        "serviceAccountName": spec.service_account,
        # The trainer talks to object stores with its own credentials, never to the API server.
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security_context(),
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
    }
    replicated = {
        "name": NODE,
        "replicas": 1,
        "template": {
            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
            "spec": {
                "backoffLimit": spec.backoff_limit,
                "template": {
                    # Kubeflow profile namespaces inject an Istio sidecar, which keeps a
                    # finished training pod Running forever: opt out.
                    "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": pod,
                },
            },
        },
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRuntime",
        "metadata": {
            "name": name,
            "labels": {**job_labels(spec), "trainer.kubeflow.org/framework": "torch"},
        },
        "spec": {
            "mlPolicy": {"numNodes": spec.num_nodes, "torch": {}},
            "template": {"spec": {"replicatedJobs": [replicated]}},
        },
    }
