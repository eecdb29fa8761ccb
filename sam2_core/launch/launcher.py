"""Run a rendered training job on the cluster and follow it to its end.

:class:`JobLauncher` talks to the API server through the official ``kubernetes`` client, for
any job kind described by a :class:`JobKind` (API group/version/plural and the labels of its
pods; :data:`PYTORCHJOB` today):

* **create or attach**: the job name is derived from the pipeline run id
  (:func:`sam2_core.launch.spec.job_name_for_run`), so a retried launcher step gets HTTP 409
  and attaches to the job it created before instead of starting a second one. A job of the same
  name that belongs to another run is an error; one that already *failed* is deleted and created
  again (that is what a retry asks for).
* **watch**: polls ``status.conditions`` (Created/Running/Restarting/Succeeded/Failed). Polling a
  GET survives API-server restarts and dropped watch connections, which silently stall watches.
* **logs**: a background thread follows the Master pod's log and copies it into this process's
  stdout (= the KFP step's log), re-attaching after pod restarts without repeating lines.
* **failure**: raises :class:`JobFailed` carrying the job's reason/message, the containers'
  termination reasons (e.g. ``OOMKilled``) and the last log lines.
* **timeout**: raises :class:`JobTimeout` after ``timeout_s`` and deletes the job.
* **cancel**: SIGTERM (what KFP/Argo sends when a run is cancelled) deletes the job.
* **runtime**: a job that names a Trainer v2 runtime (``spec.runtimeRef``) gets it first, so a
  missing runtime fails before anything is created, in one line.
* **RBAC**: a 403 becomes :class:`RBACError` naming the verb, resource and service account.

"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from sam2_core.launch.spec import RUN_ID_ANNOTATION

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class JobKind:
    """A custom resource the launcher can run: where it lives and how to find its pods."""

    kind: str
    group: str
    version: str
    plural: str
    #: label selector of all pods of job ``{name}``
    pods_selector: str
    #: label selector of the pod whose log is the job's log (rank 0) of job ``{name}``
    rank0_selector: str
    #: what to check when the API server refuses to create the job
    refused_hint: str = ""

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}"


PYTORCHJOB = JobKind(
    kind="PyTorchJob",
    group="kubeflow.org",
    version="v1",
    plural="pytorchjobs",
    pods_selector="training.kubeflow.org/job-name={name}",
    rank0_selector="training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master",
    refused_hint="is the Training Operator v1.9 (CRD pytorchjobs.kubeflow.org) installed?",
)
#: Kubeflow Trainer v2: the controller runs a TrainJob as a JobSet of the same name; the torch
#: runtimes' replicated job ``node`` is one indexed Job whose completion index is the node rank.
TRAINJOB = JobKind(
    kind="TrainJob",
    group="trainer.kubeflow.org",
    version="v1alpha1",
    plural="trainjobs",
    pods_selector="jobset.sigs.k8s.io/jobset-name={name}",
    rank0_selector=(
        "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
        "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0"
    ),
    refused_hint=(
        "apply the project's runtime (TrainingRuntime sam2kf-torch: kubectl apply -k "
        "manifests/overlays/<overlay>-trainer) or name the stock one (runtime="
        "torch-distributed, runtime_kind=ClusterTrainingRuntime; kubectl get "
        "clustertrainingruntimes)"
    ),
)


def served_kinds(
    api_client: Any, kinds: tuple[JobKind, ...] = (TRAINJOB, PYTORCHJOB)
) -> list[JobKind]:
    """The kinds among ``kinds`` whose resource the API server serves (its discovery API)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client)
    out = []
    for kind in kinds:
        try:
            resources = api.get_api_resources(kind.group, kind.version)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        if any(r.name == kind.plural for r in (resources.resources or [])):
            out.append(kind)
    return out


def choose_kind(api_client: Any) -> JobKind:
    """Trainer v2 when the cluster serves it, else the Training Operator v1, else LaunchError."""
    served = served_kinds(api_client)
    if not served:
        raise LaunchError(
            f"the cluster serves neither {TRAINJOB.resource} (Kubeflow Trainer v2) nor "
            f"{PYTORCHJOB.resource} (Training Operator v1): install the Trainer v2 Helm chart "
            "(v2.3.0) or the Training Operator v1.9, or pick engine=local"
        )
    return served[0]


class LaunchError(RuntimeError):
    """The training job could not be run to success."""


class RBACError(LaunchError):
    """The service account lacks a permission (HTTP 403)."""


class JobFailed(LaunchError):
    """The job reached the Failed condition."""


class JobTimeout(LaunchError):
    """The job did not finish within the timeout."""


class JobCancelled(LaunchError):
    """The launcher was asked to stop (SIGTERM/SIGINT) and deleted the job."""


@dataclass
class JobResult:
    name: str
    namespace: str
    state: str
    attached: bool
    reason: str = ""
    message: str = ""
    log_tail: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------- helpers
def load_api_client(*, kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from the in-cluster service account, else from a kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        return client.ApiClient(cfg)


def _service_account_from(message: str) -> str:
    m = re.search(r'User "system:serviceaccount:([^:"]+):([^"]+)"', message)
    if m:
        return f"service account {m.group(2)!r} in namespace {m.group(1)!r}"
    m = re.search(r'User "([^"]+)"', message)
    return f"user {m.group(1)!r}" if m else "the launcher's service account"


def _message(exc: Any) -> str:
    body = getattr(exc, "body", "") or ""
    try:
        return str(json.loads(body).get("message", body))
    except (ValueError, AttributeError):
        return str(body)


def rbac_error(exc: Any, *, verb: str, resource: str, group: str, namespace: str) -> RBACError:
    """Turn a 403 ApiException into a message that says exactly which permission is missing."""
    body = getattr(exc, "body", "") or ""
    try:
        message = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        message = str(body)
    who = _service_account_from(message)
    api_group = group or '""  (core)'
    return RBACError(
        f"RBAC: {who} may not '{verb}' resource '{resource}' (apiGroup {api_group}) in namespace "
        f"'{namespace}'. Grant it with a Role/RoleBinding, e.g. rules: - apiGroups: "
        f"[{group!r}] resources: [{resource!r}] verbs: [{verb!r}] (see manifests/ for the "
        f"launcher Role). API server said: {message}"
    )


def current_state(job: Mapping[str, Any]) -> tuple[str, str, str]:
    """(state, reason, message) from the newest condition whose status is "True"."""
    conds = [
        c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
    ]
    if not conds:
        return "Pending", "", ""
    # Terminal conditions win regardless of order; otherwise the last one listed is newest.
    for c in conds:
        if c.get("type") in TERMINAL or c.get("type") == "Complete":
            # Trainer v2 says "Complete" where the Training Operator says "Succeeded".
            state = "Succeeded" if c["type"] == "Complete" else str(c["type"])
            return state, str(c.get("reason", "")), str(c.get("message", ""))
    c = conds[-1]
    return str(c.get("type", "Pending")), str(c.get("reason", "")), str(c.get("message", ""))


def resolve_namespace(namespace: str) -> str:
    """``namespace``, else ``$POD_NAMESPACE`` (downward API), else this pod's, else default."""
    if namespace:
        return namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    sa_ns = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(sa_ns):
        with open(sa_ns) as f:
            return f.read().strip() or "default"
    return "default"


def _lines(resp: Any) -> Iterator[str]:
    """Whole lines of a streamed (``_preload_content=False``) response; chunks split anywhere."""
    buf = b""
    for chunk in resp.stream(amt=65536, decode_content=True):
        buf += chunk
        *done, buf = buf.split(b"\n")
        for raw in done:
            yield raw.decode("utf-8", "replace")
    if buf:
        yield buf.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------- launcher
class JobLauncher:
    """Create/attach, watch, stream logs, time out and cancel one job of ``kind``."""

    def __init__(
        self,
        *,
        kind: JobKind = PYTORCHJOB,
        api_client: Any = None,
        namespace: str = "default",
        poll_interval_s: float = 10.0,
        timeout_s: float | None = 7 * 24 * 3600.0,
        log_tail_lines: int = 50,
        delete_on_timeout: bool = True,
        out: IO[str] | None = None,
    ) -> None:
        from kubernetes import client

        self.kind = kind
        self.api_client = api_client if api_client is not None else load_api_client()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.namespace = namespace
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.delete_on_timeout = delete_on_timeout
        self.out = out or sys.stdout
        self.tail: collections.deque[str] = collections.deque(maxlen=log_tail_lines)
        self._stop = threading.Event()
        self._cancel = threading.Event()

    # -- API calls with RBAC-aware errors ---------------------------------------------------
    @contextlib.contextmanager
    def _api(self, verb: str, resource: str, group: str | None = None) -> Iterator[None]:
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as exc:
            if exc.status == 403:
                raise rbac_error(
                    exc,
                    verb=verb,
                    resource=resource,
                    group=self.kind.group if group is None else group,
                    namespace=self.namespace,
                ) from None
            raise

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        k = self.kind
        try:
            with self._api("get", self.kind.plural):
                return dict(
                    self.custom.get_namespaced_custom_object(
                        k.group, k.version, self.namespace, k.plural, name
                    )
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        """Delete the job and its pods (foreground); a missing job is fine."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            with self._api("delete", self.kind.plural):
                self.custom.delete_namespaced_custom_object(
                    self.kind.group,
                    self.kind.version,
                    self.namespace,
                    self.kind.plural,
                    name,
                    body=client.V1DeleteOptions(propagation_policy="Foreground"),
                )
            self._say(f"deleted {self.kind.kind} {self.namespace}/{name}")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def check_runtime(self, manifest: Mapping[str, Any]) -> None:
        """A Trainer v2 job names a runtime (``spec.runtimeRef``): ``get`` it first, so that a
        missing runtime fails at once with one line instead of at admission, or never when
        the controller is lenient. Jobs without a runtimeRef (PyTorchJob) pass."""
        from kubernetes.client.exceptions import ApiException

        ref = (manifest.get("spec") or {}).get("runtimeRef")
        if not ref:
            return
        name = str(ref.get("name", ""))
        kind = str(ref.get("kind") or "ClusterTrainingRuntime")
        group = str(ref.get("apiGroup") or self.kind.group)
        plural = f"{kind.lower()}s"
        job = f"{manifest.get('kind', self.kind.kind)} {self.namespace}/{manifest['metadata']['name']}"
        try:
            with self._api("get", plural, group=group):
                if kind == "ClusterTrainingRuntime":
                    self.custom.get_cluster_custom_object(group, self.kind.version, plural, name)
                else:
                    self.custom.get_namespaced_custom_object(
                        group, self.kind.version, self.namespace, plural, name
                    )
        except ApiException as exc:
            if exc.status != 404:
                raise
            where = "" if kind == "ClusterTrainingRuntime" else f" in namespace {self.namespace!r}"
            raise LaunchError(
                f"{job} names runtime {kind} {name!r}, which does not exist{where}: "
                f"{self.kind.refused_hint}"
            ) from None

    def create_or_attach(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the job; on 409 attach to the existing one of the same run. -> (job, attached)."""
        from kubernetes.client.exceptions import ApiException

        k = self.kind
        self.check_runtime(manifest)
        name = manifest["metadata"]["name"]
        run_id = (manifest["metadata"].get("annotations") or {}).get(RUN_ID_ANNOTATION)
        for _ in range(2):
            try:
                with self._api("create", self.kind.plural):
                    created = self.custom.create_namespaced_custom_object(
                        k.group, k.version, self.namespace, k.plural, manifest
                    )
                self._say(f"created {self.kind.kind} {self.namespace}/{name}")
                return dict(created), False
            except ApiException as exc:
                if exc.status in (400, 404, 422):
                    raise LaunchError(
                        f"{self.kind.kind} {self.namespace}/{name} was refused by the API server "
                        f"({exc.status} {exc.reason}): {_message(exc)}; {self.kind.refused_hint}"
                    ) from None
                if exc.status != 409:
                    raise
            existing = self.get(name)
            if existing is None:  # deleted between our create and get: create again
                continue
            theirs = (existing.get("metadata", {}).get("annotations") or {}).get(RUN_ID_ANNOTATION)
            if run_id and theirs and theirs != run_id:
                raise LaunchError(
                    f"{self.kind.kind} {self.namespace}/{name} exists but belongs to run {theirs!r}, "
                    f"not {run_id!r}; delete it or use another job name prefix"
                )
            state, _, _ = current_state(existing)
            if state != "Failed":
                self._say(
                    f"attached to existing {self.kind.kind} {self.namespace}/{name} ({state})"
                )
                return existing, True
            self._say(f"{self.kind.kind} {name} exists and Failed: deleting it to retry")
            self.delete(name)
            self._wait_gone(name)
        raise LaunchError(f"could not create {self.kind.kind} {self.namespace}/{name}")

    def _wait_gone(self, name: str, limit_s: float = 300.0) -> None:
        deadline = time.monotonic() + limit_s
        while self.get(name) is not None:
            if deadline is not None and time.monotonic() > deadline:
                raise LaunchError(f"{self.kind.kind} {name} was not deleted within {limit_s:.0f}s")
            time.sleep(self.poll_interval_s)

    # -- logs -------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        print(f"[launcher] {text}", file=self.out, flush=True)

    def _master_pod(self, name: str) -> str | None:
        with self._api("list", "pods", group=""):
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=self.kind.rank0_selector.format(name=name)
            )
        items = sorted(pods.items or [], key=lambda p: p.metadata.creation_timestamp or 0)
        return items[-1].metadata.name if items else None

    def _follow_logs(self, name: str) -> None:
        """Copy the Master's log to ``out``; re-attach after restarts, skipping seen lines."""
        from kubernetes.client.exceptions import ApiException

        last_stamp = ""
        while not self._stop.is_set():
            try:
                pod = self._master_pod(name)
                if pod is None:
                    self._stop.wait(self.poll_interval_s)
                    continue
                with self._api("get", "pods/log", group=""):
                    resp = self.core.read_namespaced_pod_log(
                        pod, self.namespace, follow=True, timestamps=True, _preload_content=False
                    )
                for line in _lines(resp):
                    stamp, _, text = line.partition(" ")
                    if stamp and stamp <= last_stamp:
                        continue  # already printed before a re-attach
                    last_stamp = stamp or last_stamp
                    self.tail.append(text)
                    print(f"[{pod}] {text}", file=self.out, flush=True)
            except RBACError as exc:
                self._say(f"cannot read logs: {exc}")
                return
            except ApiException as exc:
                # 400: container still creating; 404: pod replaced. Both are transient.
                log.debug("log stream for %s: %s", name, exc.reason)
            except Exception as exc:  # connection drops: try again
                log.debug("log stream for %s ended: %s", name, exc)
            self._stop.wait(self.poll_interval_s)

    def _termination_reasons(self, name: str) -> list[str]:
        try:
            with self._api("list", "pods", group=""):
                pods = self.core.list_namespaced_pod(
                    self.namespace, label_selector=self.kind.pods_selector.format(name=name)
                )
        except Exception:
            return []
        out = []
        for pod in pods.items or []:
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                term = (cs.state and cs.state.terminated) or (
                    cs.last_state and cs.last_state.terminated
                )
                if term and (term.exit_code or 0) != 0:
                    out.append(
                        f"{pod.metadata.name}/{cs.name}: {term.reason} (exit {term.exit_code})"
                    )
        return out

    # -- main loop ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask :meth:`launch` to stop; it deletes the job and raises :class:`JobCancelled`."""
        self._cancel.set()

    @contextlib.contextmanager
    def cancel_on_signals(self) -> Iterator[None]:
        """Route SIGTERM/SIGINT to :meth:`cancel` while launching (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, frame: Any) -> None:
            self._say(f"received signal {signum}: cancelling")
            self.cancel()

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def launch(self, manifest: dict[str, Any]) -> JobResult:
        """Create (or attach to) the job, follow it to a terminal state and return the result."""
        self.namespace = manifest["metadata"].get("namespace") or self.namespace
        name = manifest["metadata"]["name"]
        with self.cancel_on_signals():
            job, attached = self.create_or_attach(manifest)
            logs = threading.Thread(target=self._follow_logs, args=(name,), daemon=True)
            logs.start()
            try:
                return self._wait(name, job, attached)
            finally:
                self._stop.set()
                logs.join(timeout=5.0)

    def _wait(self, name: str, job: dict[str, Any] | None, attached: bool) -> JobResult:
        deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else None
        seen_state = ""
        while True:
            if self._cancel.is_set():
                self.delete(name)
                raise JobCancelled(
                    f"launcher cancelled; {self.kind.kind} {self.namespace}/{name} deleted"
                )
            if job is None:
                raise LaunchError(
                    f"{self.kind.kind} {self.namespace}/{name} disappeared (deleted by someone?)"
                )
            state, reason, message = current_state(job)
            if state != seen_state:
                self._say(f"{self.kind.kind} {name}: {state} {reason} {message}".rstrip())
                seen_state = state
            if state == "Succeeded":
                self._drain_logs()
                return JobResult(
                    name, self.namespace, state, attached, reason, message, list(self.tail)
                )
            if state == "Failed":
                self._drain_logs()
                details = "; ".join(self._termination_reasons(name))
                tail = "\n".join(self.tail)
                raise JobFailed(
                    f"{self.kind.kind} {self.namespace}/{name} failed: {reason}: {message}"
                    + (f"\ncontainers: {details}" if details else "")
                    + f"\nlast {len(self.tail)} log lines of the master:\n{tail}"
                )
            if deadline is not None and time.monotonic() > deadline:
                if self.delete_on_timeout:
                    self.delete(name)
                tail = "\n".join(self.tail)
                raise JobTimeout(
                    f"{self.kind.kind} {self.namespace}/{name} did not finish within {self.timeout_s:.0f}s "
                    f"(last state {state})\nlast {len(self.tail)} log lines:\n{tail}"
                )
            self._cancel.wait(self.poll_interval_s)
            if not self._cancel.is_set():
                job = self.get(name)

    def _drain_logs(self) -> None:
        # Give the log thread a moment to copy the final lines before we report.
        time.sleep(min(1.0, 2 * self.poll_interval_s))
