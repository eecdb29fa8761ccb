"""`sam2kf submit|schedule` through the real kfp.Client against a loopback KFP API stub."""

import pytest

from pipelines.client import check_cron
from sam2_core import __version__
from sam2_core.cli import main

from .kfp_stub import FakeKfpServer


def _posts(srv: FakeKfpServer, path: str) -> list[dict]:
    return [r["body"] for r in srv.requests if r["method"] == "POST" and r["path"] == path]


def test_submit_starts_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKfpServer() as srv:
        rc = main(
            ["submit", "--host", srv.host, "--raw-uri", "gs://b/raw", "--registry-uri", "gs://b/reg",
             "-p", "num_nodes=4", "-p", "min_jf_gain=1.5", "--run-name", "nightly"]
        )  # fmt: skip
    assert rc == 0 and "run-123" in capsys.readouterr().out
    (run,) = _posts(srv, "/apis/v2beta1/runs")
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-1"
    params = run["runtime_config"]["parameters"]
    assert params == {
        "raw_uri": "gs://b/raw",
        "registry_uri": "gs://b/reg",
        "num_nodes": 4,
        "min_jf_gain": 1.5,
    }
    # the uploaded spec is our pipeline, with its kfp-kubernetes platform config
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "sam2-finetune"
    assert "kubernetes" in spec["platform_spec"]["platforms"]


def test_schedule_creates_recurring_run(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKfpServer() as srv:
        rc = main(
            ["schedule", "--host", srv.host, "--cron", "0 0 3 * * 0",
             "--raw-uri", "gs://b/raw", "--registry-uri", "gs://b/reg"]
        )  # fmt: skip
    assert rc == 0 and "rr-456" in capsys.readouterr().out
    (rec,) = _posts(srv, "/apis/v2beta1/recurringruns")
    assert rec["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 0"}}
    assert rec["max_concurrency"] == 1 and rec["no_catchup"] is True and rec["mode"] == "ENABLE"
    assert rec["experiment_id"] == "exp-1"
    assert rec["runtime_config"]["parameters"]["raw_uri"] == "gs://b/raw"


def test_bad_inputs_fail_before_contacting_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValueError, match="6 fields"):
        check_cron("0 3 * * 0")
    # One line, exit status 2 (sam2_core.cli); no exception escapes main.
    assert (
        main(
            [
                "submit",
                "--host",
                "http://127.0.0.1:9",
                "--raw-uri",
                "x",
                "--registry-uri",
                "y",
                "-p",
                "nope=1",
            ]
        )
        == 2
    )
    assert "unknown parameter" in capsys.readouterr().err
    assert main(["submit", "--host", "http://127.0.0.1:9", "--raw-uri", "x"]) == 2
    assert "--registry-uri" in capsys.readouterr().err


def test_submit_and_schedule_use_the_image_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--image-repo (submit) and $SAM2KF_IMAGE_REPO (schedule) reach every step's executor."""
    repo = "registry.example.com/team/sam2-kubeflow"
    monkeypatch.delenv("SAM2KF_IMAGE_TAG", raising=False)
    monkeypatch.delenv("SAM2KF_IMAGE_REPO", raising=False)
    common = ["--raw-uri", "gs://b/raw", "--registry-uri", "gs://b/reg"]
    with FakeKfpServer() as srv:
        assert main(["submit", "--host", srv.host, *common, "--image-repo", repo]) == 0
        monkeypatch.setenv("SAM2KF_IMAGE_REPO", repo)
        assert main(["schedule", "--host", srv.host, "--cron", "0 0 3 * * 0", *common]) == 0
    (run,) = _posts(srv, "/apis/v2beta1/runs")
    (rec,) = _posts(srv, "/apis/v2beta1/recurringruns")
    for spec in (run["pipeline_spec"], rec["pipeline_spec"]):
        executors = spec["pipeline_spec"]["deploymentSpec"]["executors"].values()
        images = {e["container"]["image"] for e in executors}
        assert images == {f"{repo}:{__version__}-data", f"{repo}:{__version__}-train"}
