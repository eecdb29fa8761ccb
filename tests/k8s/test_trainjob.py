"""Kubeflow Trainer v2: the rendered TrainJob and TrainingRuntime validate strictly against the
v2.3.0 CRDs, and the launcher runs a TrainJob as it runs a PyTorchJob (loopback API stub)."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest

from sam2_core.launch.engines import ClusterEngine, make_engine
from sam2_core.launch.launcher import (
    PYTORCHJOB,
    TRAINJOB,
    JobFailed,
    JobLauncher,
    JobTimeout,
    LaunchError,
    RBACError,
    choose_kind,
)
from sam2_core.launch.pytorchjob import render_pytorchjob
from sam2_core.launch.spec import JobRun, LaunchSpec, storage_secret_env, train_command
from sam2_core.launch.trainjob import render_training_runtime, render_trainjob
from sam2_core.launch.validate import check_restricted_pod, validate_trainer_object

from .launcher_stub import ApiState, FakeApiServer

NS = "team-a"


def _schemas(shared: Path) -> Path:
    d = shared / "k8s-schemas"
    if not (d / "trainer.kubeflow.org_trainjobs.yaml").exists():
        pytest.skip(f"Trainer v2 CRDs absent from {d}")
    return d


def _spec(**kw: Any) -> LaunchSpec:
    base: dict[str, Any] = {
        "engine": "trainjob",
        "namespace": NS,
        "num_nodes": 2,
        "nproc_per_node": 4,
        "gpus_per_process": 1,
        "pvc_claim": "sam2kf-data",
        "secret_env": storage_secret_env("mlpipeline-minio-artifact"),
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "timeout_hours": 24,
        "experiment": "sav_finetune",
        "overrides": ["trainer.device=cuda"],
    }
    return LaunchSpec(**{**base, **kw})


RUN = JobRun(run_id="run1", train_args=["data.shards=gs://b/s", "trainer.output_dir=gs://b/o"])


def test_trainjob_validates_strictly_and_matches_the_pytorchjob(shared: Path) -> None:
    spec = _spec()
    job = render_trainjob(spec, RUN)
    assert validate_trainer_object(job, _schemas(shared)) == []
    t = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": "sam2kf-torch",
    }
    assert (t["numNodes"], t["numProcPerNode"]) == (2, 4)
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert job["spec"]["activeDeadlineSeconds"] == 24 * 3600
    # The same command, env and pod security as the PyTorchJob of the same spec and run.
    pj = render_pytorchjob(spec, RUN)
    master = pj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert t["command"] == train_command(spec, RUN) == master["containers"][0]["command"]
    assert t["env"] == master["containers"][0]["env"]
    assert t["resourcesPerNode"] == master["containers"][0]["resources"]
    (patch,) = job["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"
    ]["spec"]
    for key in ("serviceAccountName", "securityContext", "volumes", "nodeSelector", "tolerations"):
        assert pod[key] == master[key], key
    assert pod["containers"][0]["volumeMounts"] == master["containers"][0]["volumeMounts"]
    assert job["metadata"]["annotations"] == {"sam2kf.io/run-id": "run1"}


def test_stock_runtime_and_validator_catches(shared: Path) -> None:
    d = _schemas(shared)
    stock = render_trainjob(
        _spec(runtime="torch-distributed", runtime_kind="ClusterTrainingRuntime"), RUN
    )
    assert validate_trainer_object(stock, d) == []
    bad = copy.deepcopy(stock)
    bad["spec"]["trainer"]["numNode"] = 3  # a typo: strict validation refuses unknown fields
    assert any("numNode" in e for e in validate_trainer_object(bad, d))
    bad = copy.deepcopy(stock)
    bad["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "9"})
    assert any("torch plugin" in e for e in validate_trainer_object(bad, d))
    bad = copy.deepcopy(stock)
    bad["spec"]["runtimeRef"]["kind"] = "Runtime"
    assert any("runtimeRef.kind" in e for e in validate_trainer_object(bad, d))
    bad = copy.deepcopy(stock)
    jobs = bad["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    jobs["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["name"] = (
        "pytorch"
    )
    assert any("container 'pytorch'" in e for e in validate_trainer_object(bad, d))


def test_renderer_refuses_what_trainer_v2_cannot_express() -> None:
    for kw, match in [
        ({"elastic_min_nodes": 2, "elastic_max_nodes": 4}, "elastic"),
        ({"env_from_secrets": ["creds"]}, "env_from_secrets"),
        ({"runtime_kind": "Runtime"}, "runtime_kind"),
        ({"image": "ghcr.io/x/y:latest"}, "pinned"),
    ]:
        with pytest.raises(ValueError, match=match):
            render_trainjob(_spec(**kw), RUN)
    with pytest.raises(ValueError, match="wait_for"):
        render_trainjob(_spec(), JobRun(run_id="r", wait_for="/data/x"))


def test_training_runtime_validates_and_is_restricted(shared: Path) -> None:
    rt = render_training_runtime(LaunchSpec(pvc_claim="sam2kf-data"))
    assert validate_trainer_object(rt, _schemas(shared)) == []
    (job,) = rt["spec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    assert check_restricted_pod(pod) == []
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "sam2kf-data"
    assert pod["automountServiceAccountToken"] is False


# ------------------------------------------------------------------------------ the launcher
def _engine(api: FakeApiServer, out: io.StringIO) -> ClusterEngine:
    engine = make_engine("trainjob", api_client=api.api_client(), out=out, poll_interval_s=0.02)
    assert isinstance(engine, ClusterEngine)
    return engine


def test_trainjob_runs_to_complete_and_streams_rank0_log() -> None:
    out = io.StringIO()
    state = ApiState(script=["Created", "Running", "Running", "Succeeded"])
    with FakeApiServer(state) as api:
        res = _engine(api, out).run(_spec(), RUN)
        # a retried step of the same run attaches to the job instead of creating another
        state.steps[res.name] = 0
        again = _engine(api, io.StringIO()).run(_spec(), RUN)
    assert res.state == "Succeeded" and not res.attached and again.attached
    assert state.creates == 1
    assert ("POST", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs") in (
        state.requests
    )
    text = out.getvalue()
    assert f"created TrainJob {NS}/{res.name}" in text and "step 2 loss 0.5" in text


def test_trainjob_of_another_run_is_refused() -> None:
    state = ApiState()
    with FakeApiServer(state) as api:
        engine = _engine(api, io.StringIO())
        theirs = engine.manifest(_spec(), JobRun(run_id="other", name=RUN.job_name))
        state.jobs[RUN.job_name] = theirs
        state.steps[RUN.job_name] = 0
        with pytest.raises(LaunchError, match="belongs to run 'other'"):
            engine.run(_spec(), RUN)


def test_trainjob_failure_names_reason_oomkilled_and_log() -> None:
    state = ApiState(
        script=["Created", "Running", "Failed"],
        log_lines=["step 1 loss 0.9", "killed"],
        terminated_reason="OOMKilled",
    )
    with FakeApiServer(state) as api, pytest.raises(JobFailed) as exc:
        _engine(api, io.StringIO()).run(_spec(), RUN)
    text = str(exc.value)
    assert "TrainJob" in text and "BackoffLimitExceeded" in text
    assert "OOMKilled" in text and "killed" in text


def test_trainjob_timeout_deletes_it() -> None:
    state = ApiState(script=["Created", "Running"])
    with FakeApiServer(state) as api, pytest.raises(JobTimeout):
        manifest = render_trainjob(_spec(), RUN)
        JobLauncher(
            kind=TRAINJOB,
            api_client=api.api_client(),
            namespace=NS,
            poll_interval_s=0.02,
            timeout_s=0.3,
            out=io.StringIO(),
        ).launch(manifest)
    assert state.deletes == 1 and state.jobs == {}


def test_trainjob_naming_a_missing_runtime_fails_at_once() -> None:
    """The launcher gets the runtime before creating anything: one line, nothing created."""
    state = ApiState(runtimes={"torch-distributed"})
    with FakeApiServer(state) as api, pytest.raises(LaunchError) as exc:
        _engine(api, io.StringIO()).run(_spec(), RUN)
    text = str(exc.value)
    assert "TrainingRuntime 'sam2kf-torch', which does not exist in namespace 'team-a'" in text
    assert "torch-distributed" in text and "\n" not in text
    assert state.creates == 0
    assert (
        "GET",
        f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainingruntimes/sam2kf-torch",
    ) in state.requests
    assert not [r for r in state.requests if r[0] == "POST"]


def test_stock_cluster_runtime_is_checked_cluster_wide() -> None:
    state = ApiState(runtimes={"torch-distributed"})
    spec = _spec(runtime="torch-distributed", runtime_kind="ClusterTrainingRuntime")
    with FakeApiServer(state) as api:
        assert _engine(api, io.StringIO()).run(spec, RUN).state == "Succeeded"
    assert (
        "GET",
        "/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes/torch-distributed",
    ) in state.requests
    missing = ApiState(runtimes=set())
    with FakeApiServer(missing) as api, pytest.raises(LaunchError, match="ClusterTrainingRuntime"):
        _engine(api, io.StringIO()).run(spec, RUN)
    assert missing.creates == 0


def test_runtime_get_forbidden_names_the_permission() -> None:
    msg = (
        'trainingruntimes.trainer.kubeflow.org "sam2kf-torch" is forbidden: User '
        '"system:serviceaccount:team-a:sam2kf-launcher" cannot get resource "trainingruntimes"'
    )
    state = ApiState(forbid={("GET", "trainingruntimes/"): msg})
    with FakeApiServer(state) as api, pytest.raises(RBACError) as exc:
        _engine(api, io.StringIO()).run(_spec(), RUN)
    text = str(exc.value)
    assert "'get' resource 'trainingruntimes' (apiGroup trainer.kubeflow.org)" in text
    assert state.creates == 0


def test_pytorchjob_needs_no_runtime() -> None:
    state = ApiState(runtimes=set())
    with FakeApiServer(state) as api:
        engine = make_engine("pytorchjob", api_client=api.api_client(), poll_interval_s=0.01)
        assert isinstance(engine, ClusterEngine)
        engine.out = io.StringIO()
        assert engine.run(_spec(engine="pytorchjob", gpus_per_process=0), RUN).state == "Succeeded"
    assert not [r for r in state.requests if "runtimes" in r[1]]


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        ({"trainjobs", "pytorchjobs"}, TRAINJOB),
        ({"trainjobs"}, TRAINJOB),
        ({"pytorchjobs"}, PYTORCHJOB),
    ],
)
def test_auto_picks_what_the_cluster_serves(served: set[str], expected: Any) -> None:
    with FakeApiServer(ApiState(served=served)) as api:
        assert choose_kind(api.api_client()) == expected
        engine = make_engine("auto", api_client=api.api_client())
        assert isinstance(engine, ClusterEngine) and engine.kind == expected


def test_auto_without_either_operator_names_both_crds() -> None:
    with FakeApiServer(ApiState(served=set())) as api, pytest.raises(LaunchError) as exc:
        make_engine("auto", api_client=api.api_client())
    text = str(exc.value)
    assert "trainjobs.trainer.kubeflow.org" in text and "pytorchjobs.kubeflow.org" in text
    assert "\n" not in text
