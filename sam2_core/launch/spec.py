"""The one training-launch spec: every setting of a ``sam2kf train`` launch, in one place.

:class:`LaunchSpec` is built once (by the pipeline from its compile-time cluster settings and
its run-time parameters, by the CronJob from its ConfigMap, by the manifests generator from an
overlay), travels as one JSON-ready dict (:meth:`LaunchSpec.to_dict` / :meth:`LaunchSpec.from_dict`,
also the KFP parameter ``launch`` of the train component) and is rendered by the engine it names
(``pytorchjob``: :func:`sam2_core.launch.pytorchjob.render_pytorchjob`; ``local``: torchrun
processes, :mod:`sam2_core.launch.local`). :class:`JobRun` holds what differs between two runs of
the same spec (the run id, the data and output locations).

Each setting has one name, one unit and one default, documented here only:

=====================  =================  =======================================================
field                  default            meaning
=====================  =================  =======================================================
engine                 ``auto``           where the job runs: ``pytorchjob`` (Training Operator
                                          v1), ``trainjob`` (Kubeflow Trainer v2), ``auto``
                                          (whichever the cluster serves, v2 first), ``local``
num_nodes              1                  pods (PyTorchJob Master + Workers) or local agents
nproc_per_node         1                  torchrun processes per node
gpus_per_process       0                  GPUs per process (0 = CPU); a node asks for
                                          ``gpus_per_process * nproc_per_node``
cpu / memory           ``4`` / ``16Gi``   CPU request and memory request = limit per pod
image                  ``""``             container image; "" = this version's ``-train`` image
namespace              ``""``             "" = the launcher's ($POD_NAMESPACE, its pod's, default)
service_account        ``sam2kf-trainer`` service account of the training pods
pvc_claim              ``""``             PVC mounted at ``pvc_mount_path`` ("" = none)
pvc_mount_path         ``/data``          mount path of ``pvc_claim``
env                    {}                 plain env vars of the training processes
secret_env             {}                 env var -> [Secret, key] (credentials by reference)
env_from_secrets       []                 Secrets whose every key becomes an env var
node_selector          {}                 node labels of the training pods
tolerations            []                 tolerations of the training pods
timeout_hours          72.0               job deadline and launcher wait (0 = no limit)
experiment             ``""``             ``experiment=`` of ``sam2kf train`` ("" = none)
overrides              []                 further Hydra overrides (last: they win)
runtime                ``sam2kf-torch``   Trainer v2 runtime a TrainJob names
runtime_kind           ``TrainingRuntime`` its kind (or ``ClusterTrainingRuntime``, e.g. the
                                          stock ``torch-distributed``)
=====================  =================  =======================================================

The KFP pipeline's run form starts from the production shape instead (2 nodes x 8 GPUs, the
``sav_finetune`` experiment): that difference is deliberate and listed in one place,
``pipelines.finetune.RUN_FORM_LAUNCH``; the form's other launch parameters use these defaults.

The remaining fields tune the pods (scratch sizes, elastic bounds, retry and clean-up policy,
labels) and keep the defaults the PyTorchJob renderer always had.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Engines a spec may name; ``auto`` asks the cluster which of the two operators it serves.
ENGINES = ("auto", "trainjob", "pytorchjob", "local")
#: Annotation holding the run id on a job; a create conflict is an attach only when it matches.
RUN_ID_ANNOTATION = "sam2kf.io/run-id"
#: Longest job name we hand out: the operator derives pod and Service names such as
#: ``<job>-worker-15`` from it, and a Service name must itself be a <= 63-char DNS-1035 label.
MAX_JOB_NAME_LEN = 48
#: Storage variables a launch forwards from the launcher's environment to the training
#: processes (values, never credentials: those go by reference through ``secret_env``).
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "MINIO_ENDPOINT",
    "AWS_REGION",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
)

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class LaunchSpec:
    """Every setting of a training launch (table in the module docstring)."""

    engine: str = "auto"
    num_nodes: int = 1
    nproc_per_node: int = 1
    gpus_per_process: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    image: str = ""
    namespace: str = ""
    service_account: str = "sam2kf-trainer"
    pvc_claim: str = ""
    pvc_mount_path: str = "/data"
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)
    env_from_secrets: list[str] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    timeout_hours: float = 72.0
    experiment: str = ""
    overrides: list[str] = field(default_factory=list)
    runtime: str = "sam2kf-torch"
    runtime_kind: str = "TrainingRuntime"
    # -- pod details ----------------------------------------------------------------------
    shm_size: str = "16Gi"
    cache_size: str = "20Gi"
    tmp_size: str = "10Gi"
    #: Elastic training between these pod counts (Master included); None = static.
    elastic_min_nodes: int | None = None
    elastic_max_nodes: int | None = None
    elastic_max_restarts: int = 3
    rdzv_backend: str = "c10d"
    restart_policy: str = "OnFailure"
    backoff_limit: int = 3
    ttl_seconds_after_finished: int | None = 7 * 24 * 3600
    clean_pod_policy: str = "Running"
    image_pull_policy: str = "IfNotPresent"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    priority_class_name: str | None = None
    #: How long the wait-for-data init container waits (see :attr:`JobRun.wait_for`).
    wait_timeout_hours: float = 6.0

    @property
    def gpus_per_node(self) -> int:
        return self.gpus_per_process * self.nproc_per_node

    @property
    def elastic(self) -> bool:
        return self.elastic_min_nodes is not None or self.elastic_max_nodes is not None

    @property
    def timeout_s(self) -> float | None:
        """The deadline in seconds, None when there is none."""
        return self.timeout_hours * 3600.0 if self.timeout_hours > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); :meth:`from_dict` reads it back."""
        out = asdict(self)
        out["secret_env"] = {k: list(v) for k, v in self.secret_env.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaunchSpec:
        """Inverse of :meth:`to_dict`, lenient about how a value was carried.

        KFP hands run-time values inside a dict parameter over as strings (``"2"``, ``"3.0"``)
        and integers inside constants as floats; each value is coerced to its field's type.
        ``overrides`` may be one whitespace/newline separated string. Unknown keys raise
        ValueError naming them, so a typo in a ConfigMap fails loudly.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown launch spec field(s) {unknown}; known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        kwargs = {name: _coerce(name, hints[name], value) for name, value in data.items()}
        if "overrides" in kwargs:
            kwargs["overrides"] = split_overrides(kwargs["overrides"])
        if "secret_env" in kwargs:
            kwargs["secret_env"] = {
                str(k): (str(v[0]), str(v[1])) for k, v in kwargs["secret_env"].items()
            }
        if "tolerations" in kwargs:
            kwargs["tolerations"] = [_integral(dict(t)) for t in kwargs["tolerations"]]
        spec = cls(**kwargs)
        spec.check()
        return spec

    def check(self) -> None:
        """ValueError for values no engine can run (each message names the field)."""
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.num_nodes < 1 or self.nproc_per_node < 1:
            raise ValueError("num_nodes and nproc_per_node must be >= 1")
        if self.gpus_per_process < 0:
            raise ValueError("gpus_per_process must be >= 0")
        if self.timeout_hours < 0:
            raise ValueError("timeout_hours must be >= 0 (0 = no limit)")

    def train_args(self, run_args: Sequence[str]) -> list[str]:
        """``sam2kf train`` overrides: the experiment, the run's own, then :attr:`overrides`."""
        head = [f"experiment={self.experiment}"] if self.experiment else []
        return [*head, *run_args, *self.overrides]


@dataclass
class JobRun:
    """What differs between two launches of one spec.

    ``train_args`` are this run's Hydra overrides (model, data, output directory, ...);
    :meth:`LaunchSpec.train_args` puts them between the experiment and the spec's overrides.
    """

    run_id: str = ""
    train_args: list[str] = field(default_factory=list)
    #: Job name; "" = :func:`job_name_for_run` of ``run_id``.
    name: str = ""
    #: If set, an init container waits until this URL/path exists (e.g. the shards'
    #: ``manifest.json``), so a job applied together with its data Job starts training only
    #: once the data is complete instead of crash-looping through its backoffLimit.
    wait_for: str | None = None

    @property
    def job_name(self) -> str:
        return self.name or job_name_for_run(self.run_id)


def _integral(obj: dict[str, Any]) -> dict[str, Any]:
    """Floats that are whole numbers back to ints (KFP carries ints in constants as floats)."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in obj.items()}


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` (int, float, str, optional, or a container passed through)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or value == "None":
            return None
        (hint,) = [a for a in args if a is not type(None)]
    try:
        if hint is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true")
        if hint is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"launch spec field {name}: {value!r} is not a {hint.__name__}") from None
    return value


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


def storage_secret_env(secret: str) -> dict[str, tuple[str, str]]:
    """KFP's default MinIO secret layout (keys ``accesskey``/``secretkey``) as AWS_* env."""
    if not secret:
        return {}
    return {
        "AWS_ACCESS_KEY_ID": (secret, "accesskey"),
        "AWS_SECRET_ACCESS_KEY": (secret, "secretkey"),
    }


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The :data:`FORWARDED_ENV` variables set in ``environ``."""
    return {k: environ[k] for k in FORWARDED_ENV if environ.get(k)}


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


def is_dns1035_label(name: str) -> bool:
    return bool(_DNS1035.match(name)) and len(name) <= 63


def train_command(spec: LaunchSpec, run: JobRun) -> list[str]:
    """The training command of every engine: torchrun wrapping the ``sam2kf train`` script.

    ``--no-python`` makes torchrun exec ``sam2kf`` directly (it is a console script, not a .py
    file). Node count, node rank and rendezvous come from the ``PET_*`` environment that the
    engine sets (the Training Operator in each pod, the local engine per agent).
    """
    return [
        "torchrun",
        f"--nproc-per-node={spec.nproc_per_node}",
        "--no-python",
        "sam2kf",
        "train",
        *spec.train_args(run.train_args),
    ]


def image_is_pinned(image: str) -> bool:
    """True for ``repo:tag`` (tag not ``latest``) or ``repo@sha256:...`` references."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")
