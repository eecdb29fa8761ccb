"""The one choice of training engine: a launch spec's ``engine`` name -> something that runs it.

An engine runs one :class:`~sam2_core.launch.spec.JobRun` of a
:class:`~sam2_core.launch.spec.LaunchSpec` to its end and returns a
:class:`~sam2_core.launch.launcher.JobResult` (or raises a
:class:`~sam2_core.launch.launcher.LaunchError`). A cluster engine is a renderer (spec + run ->
manifest) plus the :class:`~sam2_core.launch.launcher.JobLauncher` for that manifest's kind, so
another operator (e.g. Kubeflow Trainer v2's ``TrainJob``) is one more renderer and
:class:`~sam2_core.launch.launcher.JobKind`, with the same launcher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from sam2_core.launch.launcher import (
    PYTORCHJOB,
    TRAINJOB,
    JobKind,
    JobLauncher,
    JobResult,
    choose_kind,
    load_api_client,
    resolve_namespace,
)
from sam2_core.launch.local import LocalEngine
from sam2_core.launch.pytorchjob import render_pytorchjob
from sam2_core.launch.spec import ENGINES, JobRun, LaunchSpec
from sam2_core.launch.trainjob import render_trainjob

Renderer = Callable[[LaunchSpec, JobRun], dict[str, Any]]


class Engine(Protocol):
    def run(self, spec: LaunchSpec, run: JobRun) -> JobResult: ...


@dataclass
class ClusterEngine:
    """Render the job for the cluster and run it with the launcher (create/attach, follow)."""

    kind: JobKind
    render: Renderer
    api_client: Any = None
    out: IO[str] | None = None
    poll_interval_s: float = 10.0

    def manifest(self, spec: LaunchSpec, run: JobRun) -> dict[str, Any]:
        """The job as created: the namespace resolved to the launcher's when the spec has none."""
        return self.render(
            dataclasses.replace(spec, namespace=resolve_namespace(spec.namespace)), run
        )

    def launcher(self, spec: LaunchSpec) -> JobLauncher:
        return JobLauncher(
            kind=self.kind,
            api_client=self.api_client,
            namespace=resolve_namespace(spec.namespace),
            poll_interval_s=self.poll_interval_s,
            timeout_s=spec.timeout_s,
            out=self.out,
        )

    def run(self, spec: LaunchSpec, run: JobRun) -> JobResult:
        """Create (or attach to) the run's job and follow it to its end."""
        return self.launcher(spec).launch(self.manifest(spec, run))

    def submit(self, spec: LaunchSpec, run: JobRun) -> None:
        """Create (or attach to) the run's job without waiting for it."""
        self.launcher(spec).create_or_attach(self.manifest(spec, run))


#: The cluster engines: kind of job and its renderer.
CLUSTER_ENGINES: dict[str, tuple[JobKind, Renderer]] = {
    "pytorchjob": (PYTORCHJOB, render_pytorchjob),
    "trainjob": (TRAINJOB, render_trainjob),
}


def make_engine(
    name: str, *, api_client: Any = None, out: IO[str] | None = None, poll_interval_s: float = 10.0
) -> LocalEngine | ClusterEngine:
    """The engine called ``name`` (one of :data:`sam2_core.launch.spec.ENGINES`).

    ``auto`` asks the API server's discovery which of TrainJob (Trainer v2) and PyTorchJob
    (Training Operator v1) it serves and takes Trainer v2 when it serves both.
    """
    if name == "local":
        return LocalEngine(out=out)
    if name == "auto":
        api_client = api_client if api_client is not None else load_api_client()
        kind = choose_kind(api_client)
        name = next(n for n, (k, _) in CLUSTER_ENGINES.items() if k == kind)
    if name in CLUSTER_ENGINES:
        kind, render = CLUSTER_ENGINES[name]
        return ClusterEngine(
            kind, render, api_client=api_client, out=out, poll_interval_s=poll_interval_s
        )
    raise ValueError(f"unknown launcher engine {name!r} (expected one of {', '.join(ENGINES)})")
