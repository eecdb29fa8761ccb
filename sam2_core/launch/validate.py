"""Offline validation of PyTorchJobs and pod specs (no API server needed).

Three layers, because the CRD's OpenAPI schema alone accepts much that the cluster rejects:

1. **Schema**: ``spec.versions[*].schema.openAPIV3Schema`` of the PyTorchJob CRD, checked with
   ``jsonschema`` (Draft 7). In *strict* mode every object schema that declares properties (and
   is not ``x-kubernetes-preserve-unknown-fields``) gets ``additionalProperties: false``, which
   emulates the API server's strict field validation: a typo such as ``backoffLimt`` fails.
2. **Webhook rules** of the Training Operator (v1.9), which the schema does not encode: DNS-1035
   name, replica types Master/Worker only, exactly one Master, a container named ``pytorch``
   with an image in every replica, elasticPolicy needs a Worker, and the deprecated
   ``elasticPolicy.nProcPerNode`` may not be combined with ``spec.nprocPerNode``.
3. **Enum lint**: the CRD has no enums, so ``restartPolicy: Maybe`` would be stored and only
   fail at reconcile time; we check restartPolicy, cleanPodPolicy, rdzvBackend,
   imagePullPolicy, managedBy and nprocPerNode.

:func:`check_restricted_pod` checks a PodSpec against the Pod Security Standard "restricted"
profile (which includes "baseline"), plus this project's read-only-root-filesystem rule.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

REPLICA_TYPES = ("Master", "Worker")
CONTAINER_NAME = "pytorch"
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("None", "All", "Running")
RDZV_BACKENDS = ("c10d", "etcd", "etcd-v2")
IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
MANAGED_BY = ("kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue")


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------


def _strictify(node: Any) -> Any:
    """Copy of a schema with ``additionalProperties: false`` wherever properties are declared."""
    if isinstance(node, list):
        return [_strictify(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strictify(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=8)
def _load_crd(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as e:
        raise FileNotFoundError(f"cannot read CRD {path}: {e}") from e
    # The PyTorchJob CRD is 0.6 MB of YAML: the C loader parses it ~10x faster when present.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(text, Loader=loader)  # a safe loader either way
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path} is not a CustomResourceDefinition")
    return crd


@functools.lru_cache(maxsize=16)
def _validator(path: str, version: str, strict: bool) -> Any:
    import jsonschema

    crd = _load_crd(path)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            break
    else:
        names = [v["name"] for v in crd["spec"]["versions"]]
        raise ValueError(f"{path}: CRD has no version {version!r} (has {names})")
    if strict:
        schema = _strictify(schema)
    return jsonschema.Draft7Validator(schema)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def schema_errors(
    obj: Mapping[str, Any], crd_path: str | Path, *, strict: bool = True
) -> list[str]:
    """Errors of ``obj`` against its CRD's OpenAPI v3 schema (version from ``apiVersion``)."""
    api_version = str(obj.get("apiVersion", ""))
    crd = _load_crd(str(crd_path))
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    if "/" not in api_version or api_version.split("/", 1)[0] != group:
        return [f"apiVersion: {api_version!r} is not in group {group!r}"]
    if obj.get("kind") != kind:
        return [f"kind: {obj.get('kind')!r} is not {kind!r}"]
    validator = _validator(str(crd_path), api_version.split("/", 1)[1], strict)
    errors = sorted(validator.iter_errors(dict(obj)), key=lambda e: list(e.absolute_path))
    return [f"{_path(e.absolute_path)}: {e.message}" for e in errors]


# --------------------------------------------------------------------------------------------
# operator webhook rules + enum lint
# --------------------------------------------------------------------------------------------


def _metadata_errors(meta: Any, where: str) -> list[str]:
    errs: list[str] = []
    if not isinstance(meta, Mapping):
        return errs
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            name = str(key).rsplit("/", 1)[-1]
            prefix = str(key)[: -len(name) - 1] if "/" in str(key) else ""
            if len(name) > 63 or not _LABEL_NAME.match(name):
                errs.append(f"{where}.{field}: key {key!r} is not a valid qualified name")
            if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
                errs.append(f"{where}.{field}: key prefix {prefix!r} is not a DNS subdomain")
            if field == "labels" and (
                not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value)
            ):
                errs.append(f"{where}.labels: value {value!r} of {key!r} is not a label value")
    return errs


def _container_errors(pod: Mapping[str, Any], where: str) -> list[str]:
    errs: list[str] = []
    containers = pod.get("containers") or []
    if not containers:
        return [f"{where}.containers: at least one container is required"]
    names = []
    for i, c in enumerate(containers):
        if not isinstance(c, Mapping):
            continue
        names.append(c.get("name"))
        if not c.get("image"):
            errs.append(f"{where}.containers[{i}].image: required")
        policy = c.get("imagePullPolicy")
        if policy is not None and policy not in IMAGE_PULL_POLICIES:
            errs.append(
                f"{where}.containers[{i}].imagePullPolicy: {policy!r} not in {IMAGE_PULL_POLICIES}"
            )
    if CONTAINER_NAME not in names:
        errs.append(
            f"{where}.containers: no container named {CONTAINER_NAME!r} (found {names}); the "
            "operator only configures rendezvous for that container"
        )
    return errs


def webhook_errors(obj: Mapping[str, Any]) -> list[str]:
    """Training Operator admission-webhook rules plus the enum lint (see module docstring)."""
    errs: list[str] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035.match(name):
        errs.append(f"metadata.name: {name!r} is not a DNS-1035 label (a-z, 0-9, '-', <= 63)")
    errs += _metadata_errors(meta, "metadata")
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        return [*errs, "spec: must be an object"]
    replicas = spec.get("pytorchReplicaSpecs") or {}
    if not isinstance(replicas, Mapping):
        return [*errs, "spec.pytorchReplicaSpecs: must be an object"]
    for rtype in replicas:
        if rtype not in REPLICA_TYPES:
            errs.append(
                f"spec.pytorchReplicaSpecs.{rtype}: replica type must be one of {REPLICA_TYPES}"
            )
    if "Master" not in replicas:
        errs.append("spec.pytorchReplicaSpecs.Master: exactly one Master replica is required")
    for rtype, rspec in replicas.items():
        where = f"spec.pytorchReplicaSpecs.{rtype}"
        if not isinstance(rspec, Mapping):
            errs.append(f"{where}: must be an object")
            continue
        count = rspec.get("replicas", 1)
        if rtype == "Master" and count != 1:
            errs.append(f"{where}.replicas: must be 1, got {count!r}")
        if rtype == "Worker" and isinstance(count, int) and count < 1:
            errs.append(f"{where}.replicas: must be >= 1, got {count}")
        if isinstance(name, str) and isinstance(count, int) and count >= 1:
            # Pods and headless Services are named <job>-<type>-<index>: keep them legal too.
            longest = f"{name}-{rtype.lower()}-{count - 1}"
            if len(longest) > 63:
                errs.append(f"{where}: derived Service name {longest!r} exceeds 63 characters")
        policy = rspec.get("restartPolicy")
        if policy is not None and policy not in RESTART_POLICIES:
            errs.append(f"{where}.restartPolicy: {policy!r} not in {RESTART_POLICIES}")
        template = rspec.get("template") or {}
        pod = template.get("spec") if isinstance(template, Mapping) else None
        if not isinstance(pod, Mapping):
            errs.append(f"{where}.template.spec: required")
            continue
        errs += _metadata_errors(template.get("metadata"), f"{where}.template.metadata")
        errs += _container_errors(pod, f"{where}.template.spec")
    nproc = spec.get("nprocPerNode")
    if nproc is not None and not (
        isinstance(nproc, str) and (nproc in ("auto", "cpu", "gpu") or nproc.isdigit())
    ):
        errs.append(
            f"spec.nprocPerNode: {nproc!r} must be 'auto', 'cpu', 'gpu' or an integer string"
        )
    run_policy = spec.get("runPolicy") or {}
    if isinstance(run_policy, Mapping):
        cpp = run_policy.get("cleanPodPolicy")
        if cpp is not None and cpp not in CLEAN_POD_POLICIES:
            errs.append(f"spec.runPolicy.cleanPodPolicy: {cpp!r} not in {CLEAN_POD_POLICIES}")
        managed = run_policy.get("managedBy")
        if managed is not None and managed not in MANAGED_BY:
            errs.append(f"spec.runPolicy.managedBy: {managed!r} not in {MANAGED_BY}")
        for key in ("backoffLimit", "ttlSecondsAfterFinished", "activeDeadlineSeconds"):
            value = run_policy.get(key)
            if isinstance(value, int) and value < 0:
                errs.append(f"spec.runPolicy.{key}: must be >= 0, got {value}")
    elastic = spec.get("elasticPolicy")
    if isinstance(elastic, Mapping):
        if "Worker" not in replicas:
            errs.append("spec.elasticPolicy: requires a Worker replica spec")
        if elastic.get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
            errs.append(
                "spec.elasticPolicy.nProcPerNode: must not be set together with spec.nprocPerNode"
            )
        backend = elastic.get("rdzvBackend")
        if backend is not None and backend not in RDZV_BACKENDS:
            errs.append(f"spec.elasticPolicy.rdzvBackend: {backend!r} not in {RDZV_BACKENDS}")
        lo, hi = elastic.get("minReplicas"), elastic.get("maxReplicas")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            errs.append(f"spec.elasticPolicy: minReplicas {lo} > maxReplicas {hi}")
    return errs


#: Env names the Trainer v2 torch plugin sets; a TrainJob may not set them itself.
TRAINER_RESERVED_ENV = (
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)
TRAINER_RUNTIME_KINDS = ("TrainingRuntime", "ClusterTrainingRuntime")
TRAINER_NODE = "node"


def trainjob_rule_errors(obj: Mapping[str, Any]) -> list[str]:
    """Rules the Trainer v2 controller/webhook enforces on a TrainJob that its CRD cannot."""
    errs = _metadata_errors(obj.get("metadata"), "metadata")
    name = str((obj.get("metadata") or {}).get("name", ""))
    if not _DNS1035.match(name) or len(name) > 63:
        errs.append(f"metadata.name: {name!r} is not a DNS-1035 label (<= 63 chars)")
    spec = obj.get("spec") or {}
    ref = spec.get("runtimeRef") or {}
    if ref.get("apiGroup", "trainer.kubeflow.org") != "trainer.kubeflow.org":
        errs.append(
            f"spec.runtimeRef.apiGroup: {ref.get('apiGroup')!r} is not trainer.kubeflow.org"
        )
    if ref.get("kind", "ClusterTrainingRuntime") not in TRAINER_RUNTIME_KINDS:
        errs.append(f"spec.runtimeRef.kind: {ref.get('kind')!r} not in {TRAINER_RUNTIME_KINDS}")
    trainer = spec.get("trainer") or {}
    for key in ("numNodes", "numProcPerNode"):
        if key in trainer and (not isinstance(trainer[key], int) or trainer[key] < 1):
            errs.append(f"spec.trainer.{key}: must be an integer >= 1, got {trainer[key]!r}")
    for i, env in enumerate(trainer.get("env") or []):
        if env.get("name") in TRAINER_RESERVED_ENV:
            errs.append(f"spec.trainer.env[{i}]: {env.get('name')} is set by the torch plugin")
    managers = [p.get("manager") for p in spec.get("runtimePatches") or []]
    if len(set(managers)) != len(managers):
        errs.append("spec.runtimePatches: manager values must be unique")
    for i, patch in enumerate(spec.get("runtimePatches") or []):
        jobs = (
            ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
        ).get("replicatedJobs") or []
        for j, job in enumerate(jobs):
            where = f"spec.runtimePatches[{i}]...replicatedJobs[{j}]"
            if job.get("name") != TRAINER_NODE:
                errs.append(f"{where}.name: torch runtimes have one job {TRAINER_NODE!r}")
            pod = ((job.get("template") or {}).get("spec") or {}).get("template") or {}
            for c in (pod.get("spec") or {}).get("containers") or []:
                if c.get("name") != TRAINER_NODE:
                    errs.append(f"{where}: container {c.get('name')!r} is not {TRAINER_NODE!r}")
    return errs


def training_runtime_rule_errors(obj: Mapping[str, Any]) -> list[str]:
    """What a torch (Cluster)TrainingRuntime must hold for a TrainJob's trainer to land."""
    errs = _metadata_errors(obj.get("metadata"), "metadata")
    spec = obj.get("spec") or {}
    if "torch" not in (spec.get("mlPolicy") or {}):
        errs.append("spec.mlPolicy.torch: missing (the torch plugin sets the PET_* env)")
    jobs = ((spec.get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
    names = [j.get("name") for j in jobs]
    if TRAINER_NODE not in names:
        errs.append(f"spec.template.spec.replicatedJobs: no job named {TRAINER_NODE!r}")
    for j in jobs:
        pod = (((j.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec")
        containers = [c.get("name") for c in (pod or {}).get("containers") or []]
        if j.get("name") == TRAINER_NODE and TRAINER_NODE not in containers:
            errs.append(f"replicatedJobs[{TRAINER_NODE}]: no container named {TRAINER_NODE!r}")
    return errs


def validate_trainer_object(
    obj: Mapping[str, Any], crd_dir: str | Path, *, strict: bool = True
) -> list[str]:
    """All problems of a TrainJob, TrainingRuntime or ClusterTrainingRuntime against its
    v2 CRD in ``crd_dir`` (strict: unknown fields refused) plus the controller's rules."""
    if not isinstance(obj, Mapping):
        return [f"<root>: expected a mapping, got {type(obj).__name__}"]
    files = {
        "TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
        "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
        "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    }
    kind = str(obj.get("kind"))
    if kind not in files:
        return [f"kind: {kind!r} is not a Trainer v2 kind ({', '.join(files)})"]
    errs = schema_errors(obj, Path(crd_dir) / files[kind], strict=strict)
    if kind == "TrainJob":
        return errs + trainjob_rule_errors(obj)
    return errs + training_runtime_rule_errors(obj)


def validate_pytorchjob(
    obj: Mapping[str, Any], crd_path: str | Path, *, strict: bool = True
) -> list[str]:
    """All problems of a PyTorchJob (schema, webhook rules, enum lint); empty list = valid."""
    if not isinstance(obj, Mapping):
        return [f"<root>: expected a mapping, got {type(obj).__name__}"]
    errs = schema_errors(obj, crd_path, strict=strict)
    errs += webhook_errors(obj)
    return errs


# --------------------------------------------------------------------------------------------
# Pod Security Standard "restricted"
# --------------------------------------------------------------------------------------------

_RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_GOOD_SECCOMP = ("RuntimeDefault", "Localhost")


def _all_containers(pod: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(pod.get(key) or []):
            if isinstance(c, Mapping):
                out.append((f"{key}[{i}]({c.get('name', '?')})", c))
    return out


def check_restricted_pod(
    pod_spec: Mapping[str, Any], *, require_read_only_root: bool = True
) -> list[str]:
    """Violations of the Pod Security Standard "restricted" profile by a PodSpec.

    Covers the baseline controls (host namespaces, privileged, hostPath, hostPort, added
    capabilities, /proc mount, SELinux, AppArmor, sysctls) and the restricted ones (volume
    types, allowPrivilegeEscalation=false, runAsNonRoot, non-zero runAsUser, seccomp
    RuntimeDefault/Localhost, drop ALL capabilities). ``require_read_only_root`` adds this
    project's rule that every container runs with ``readOnlyRootFilesystem: true``.
    """
    errs: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            errs.append(f"spec.{key}: must not be true")
    for vol in pod_spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        bad = kinds - _RESTRICTED_VOLUME_TYPES
        if bad:
            errs.append(f"volumes({vol.get('name')}): type {sorted(bad)} not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            errs.append(f"securityContext.sysctls: {sysctl.get('name')!r} is not a safe sysctl")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        errs.append("securityContext.windowsOptions.hostProcess: must not be true")
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in _GOOD_SECCOMP:
        errs.append(f"securityContext.seccompProfile.type: {pod_seccomp!r} not allowed")
    if pod_sc.get("runAsUser") == 0:
        errs.append("securityContext.runAsUser: must not be 0")
    errs += _selinux_apparmor(pod_sc, "securityContext")
    containers = _all_containers(pod_spec)
    if not containers:
        errs.append("containers: none")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            errs.append(f"{where}.securityContext.privileged: must not be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            errs.append(f"{where}.securityContext.runAsNonRoot: must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            errs.append(f"{where}.securityContext.runAsUser: must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in _GOOD_SECCOMP:
            errs.append(f"{where}.securityContext.seccompProfile.type: {seccomp!r} not allowed")
        if seccomp is None and pod_seccomp is None:
            errs.append(
                f"{where}: seccompProfile RuntimeDefault/Localhost required (pod or container)"
            )
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errs.append(f"{where}.securityContext.capabilities.drop: must include ALL")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            errs.append(f"{where}.securityContext.capabilities.add: {sorted(added)} not allowed")
        if sc.get("procMount") not in (None, "Default"):
            errs.append(f"{where}.securityContext.procMount: must be Default")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            errs.append(f"{where}.securityContext.windowsOptions.hostProcess: must not be true")
        errs += _selinux_apparmor(sc, f"{where}.securityContext")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                errs.append(f"{where}.ports: hostPort {port['hostPort']} not allowed")
        if require_read_only_root and sc.get("readOnlyRootFilesystem") is not True:
            errs.append(f"{where}.securityContext.readOnlyRootFilesystem: must be true")
    return errs


def _selinux_apparmor(sc: Mapping[str, Any], where: str) -> list[str]:
    errs = []
    se = sc.get("seLinuxOptions") or {}
    if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
        errs.append(f"{where}.seLinuxOptions.type: {se.get('type')!r} not allowed")
    if se.get("user") or se.get("role"):
        errs.append(f"{where}.seLinuxOptions: user/role must not be set")
    aa = (sc.get("appArmorProfile") or {}).get("type")
    if aa not in (None, "RuntimeDefault", "Localhost"):
        errs.append(f"{where}.appArmorProfile.type: {aa!r} not allowed")
    return errs


def pod_specs_of(obj: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, PodSpec) of every pod template inside a manifest (Pod, Job, CronJob, PyTorchJob,
    Deployment-like kinds); empty for kinds without pods."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    name = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
    if kind == "Pod":
        return [(name, spec)]
    if kind == "CronJob":
        tmpl = spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
        return [(name, tmpl.get("spec") or {})]
    if kind == "PyTorchJob":
        return [
            (f"{name}/{rtype}", (r.get("template") or {}).get("spec") or {})
            for rtype, r in (spec.get("pytorchReplicaSpecs") or {}).items()
        ]
    if kind in ("TrainingRuntime", "ClusterTrainingRuntime"):
        jobs = ((spec.get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
        return [
            (
                f"{name}/{j.get('name')}",
                (((j.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec")
                or {},
            )
            for j in jobs
        ]
    if isinstance(spec.get("template"), Mapping):
        return [(name, spec["template"].get("spec") or {})]
    return []
