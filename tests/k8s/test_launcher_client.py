"""PyTorchJob launcher through the real ``kubernetes`` client against a loopback API stub."""

from __future__ import annotations

import io
import os
import signal
import threading
from typing import Any

import pytest

from sam2_core.launch.launcher import (
    JobCancelled,
    JobFailed,
    JobLauncher,
    JobTimeout,
    LaunchError,
    RBACError,
    current_state,
)
from sam2_core.launch.spec import RUN_ID_ANNOTATION

from .launcher_stub import ApiState, FakeApiServer

NS = "team-a"


def _manifest(name: str = "sam2-train-run1-abcdef12", run_id: str = "run1") -> dict[str, Any]:
    # A minimal job: the launcher does not look inside the spec (K's renderer owns it).
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": NS, "annotations": {RUN_ID_ANNOTATION: run_id}},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}}},
    }


def _launcher(api: FakeApiServer, out: io.StringIO, **kw: Any) -> JobLauncher:
    kw.setdefault("poll_interval_s", 0.02)
    kw.setdefault("timeout_s", 10.0)
    return JobLauncher(api_client=api.api_client(), namespace=NS, out=out, **kw)


def test_create_watch_succeeded_streams_master_log() -> None:
    out = io.StringIO()
    with FakeApiServer(
        ApiState(script=["Created", "Running", "Running", "Running", "Succeeded"])
    ) as api:
        res = _launcher(api, out).launch(_manifest())
    assert res.state == "Succeeded" and not res.attached
    assert api.state.creates == 1
    text = out.getvalue()
    assert "created PyTorchJob team-a/sam2-train-run1-abcdef12" in text
    assert "[sam2-train-run1-abcdef12-master-0] step 2 loss 0.5" in text
    # The log is streamed once even though the follower may re-attach.
    assert text.count("step 2 loss 0.5") == 1
    assert "Running" in text and "Succeeded" in text
    assert (
        "GET",
        f"/api/v1/namespaces/{NS}/pods/sam2-train-run1-abcdef12-master-0/log",
    ) in api.state.requests


def test_retry_attaches_on_409_instead_of_creating_twice() -> None:
    out = io.StringIO()
    state = ApiState(script=["Running", "Running", "Succeeded"])
    with FakeApiServer(state) as api:
        state.jobs["sam2-train-run1-abcdef12"] = _manifest()
        state.steps["sam2-train-run1-abcdef12"] = 0
        res = _launcher(api, out).launch(_manifest())
    assert res.attached and res.state == "Succeeded"
    assert state.creates == 0
    assert [r for r in state.requests if r[0] == "POST"] == [
        ("POST", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs")
    ]
    assert "attached to existing PyTorchJob" in out.getvalue()


def test_409_from_another_run_is_refused() -> None:
    state = ApiState()
    with FakeApiServer(state) as api:
        state.jobs["sam2-train-run1-abcdef12"] = _manifest(run_id="someone-else")
        state.steps["sam2-train-run1-abcdef12"] = 0
        with pytest.raises(LaunchError, match="belongs to run 'someone-else'"):
            _launcher(api, io.StringIO()).launch(_manifest())


def test_retry_after_failed_job_recreates_it() -> None:
    # The job left by the previous attempt reads Failed; the re-created one succeeds.
    state = ApiState(script=["Failed"], next_script=["Running", "Succeeded"])
    with FakeApiServer(state) as api:
        state.jobs["sam2-train-run1-abcdef12"] = _manifest()
        state.steps["sam2-train-run1-abcdef12"] = 0
        res = _launcher(api, io.StringIO()).launch(_manifest())
    assert state.deletes == 1 and state.creates == 1 and res.state == "Succeeded"


def test_403_names_verb_resource_and_service_account() -> None:
    msg = (
        'pytorchjobs.kubeflow.org is forbidden: User "system:serviceaccount:team-a:pipeline-runner" '
        'cannot create resource "pytorchjobs" in API group "kubeflow.org" in the namespace "team-a"'
    )
    state = ApiState(forbid={("POST", "pytorchjobs$"): msg})
    with FakeApiServer(state) as api, pytest.raises(RBACError) as exc:
        _launcher(api, io.StringIO()).launch(_manifest())
    text = str(exc.value)
    assert "'pipeline-runner'" in text and "'create'" in text and "'pytorchjobs'" in text
    assert "kubeflow.org" in text and "team-a" in text and "Role" in text


def test_failed_job_reports_reason_and_last_log_lines() -> None:
    state = ApiState(
        script=["Created", "Running", "Running", "Running", "Failed"],
        log_lines=["step 1 loss 0.9", "RuntimeError: CUDA out of memory"],
        terminated_reason="OOMKilled",
    )
    with FakeApiServer(state) as api, pytest.raises(JobFailed) as exc:
        _launcher(api, io.StringIO()).launch(_manifest())
    text = str(exc.value)
    assert "BackoffLimitExceeded" in text
    assert "OOMKilled" in text
    assert "RuntimeError: CUDA out of memory" in text


def test_timeout_deletes_the_job() -> None:
    state = ApiState(script=["Created", "Running"])
    with FakeApiServer(state) as api, pytest.raises(JobTimeout, match="did not finish within"):
        _launcher(api, io.StringIO(), timeout_s=0.3).launch(_manifest())
    assert state.deletes == 1 and state.jobs == {}


def test_sigterm_cancels_and_deletes_the_job() -> None:
    state = ApiState(script=["Created", "Running"])
    out = io.StringIO()
    with FakeApiServer(state) as api:
        launcher = _launcher(api, out, timeout_s=30.0)
        # SIGTERM is what KFP/Argo sends when a run is cancelled; deliver it mid-watch.
        timer = threading.Timer(0.4, os.kill, args=(os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            with pytest.raises(JobCancelled):
                launcher.launch(_manifest())
        finally:
            timer.cancel()
    assert state.deletes == 1 and state.jobs == {}
    assert "received signal" in out.getvalue()
    # The previous handler is restored.
    assert signal.getsignal(signal.SIGTERM) is not None


def test_current_state_prefers_terminal_conditions() -> None:
    job = {
        "status": {
            "conditions": [
                {"type": "Succeeded", "status": "True", "reason": "Done"},
                {"type": "Running", "status": "False"},
            ]
        }
    }
    assert current_state(job)[0] == "Succeeded"
    assert current_state({})[0] == "Pending"
