"""Compiled pipeline: loads back with kfp, has the expected steps and cluster settings (golden)."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.compile import (
    CRD_FILES,
    PACKAGED_CRD_DIR,
    check_ir,
    compile_pipeline,
    validate_manifests,
)
from pipelines.finetune import RUN_FORM_LAUNCH, STEP_NAMES, ClusterSettings
from sam2_core import __version__
from sam2_core.cli import main
from sam2_core.launch.images import IMAGE_REPO_ENV, IMAGE_TAG_ENV, ImageSettings
from sam2_core.launch.render_manifests import OVERLAYS
from sam2_core.launch.spec import LaunchSpec

# Golden structure. Root: plan-partitions -> the data fan-out (ParallelFor "for-loop-1":
# extract-frames -> shard-dataset per partition) -> commit-shards -> the "new-videos" condition,
# whose tasks depend on (upstream tasks):
GOLDEN_DAG = {
    "train-model": set(),
    "evaluate-challenger": {"train-model"},
    "evaluate-champion": set(),
    "promote-model": {"train-model", "evaluate-challenger", "evaluate-champion"},
}
LOOP, COND = "for-loop-1", "condition-2"
GOLDEN_PARAMS = {
    "raw_uri", "registry_uri", "dataset_name", "dataset_version", "model_name", "init_checkpoint",
    "experiment", "overrides", "num_nodes", "nproc_per_node", "gpus_per_process", "max_steps",
    "train_timeout_hours", "min_jf_gain", "launcher_backend", "storage_root", "every",
    "val_fraction", "shard_size_mb", "eval_max_videos", "data_partitions",
}  # fmt: skip


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    settings = ClusterSettings(
        pvc_claim="sam2-data",
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        eval_gpu_product="NVIDIA-L4",
    )
    out = compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml", settings=settings)
    return out, [d for d in yaml.safe_load_all(out.read_text()) if d]


def test_loads_back_with_kfp_and_protos(compiled: tuple[Path, list[dict[str, Any]]]) -> None:
    path, docs = compiled
    spec = check_ir(path)
    assert spec["pipelineInfo"]["name"] == "sam2-finetune"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == GOLDEN_PARAMS
    # the run form explains every parameter, the engine choice included
    assert all(p.get("description") for p in params.values())
    assert params["launcher_backend"]["defaultValue"] == "auto"
    for engine in ("auto", "trainjob", "pytorchjob", "local"):
        assert engine in params["launcher_backend"]["description"]
    assert len(docs) == 2  # PipelineSpec + kfp-kubernetes PlatformSpec


def test_golden_steps_and_wiring(compiled: tuple[Path, list[dict[str, Any]]]) -> None:
    _, docs = compiled
    spec = docs[0]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"plan-partitions", LOOP, "commit-shards", COND}
    assert root[LOOP]["dependentTasks"] == ["plan-partitions"]
    assert root["commit-shards"]["dependentTasks"] == [LOOP]
    cond = root[COND]
    assert "pipelinechannel--commit-shards-Output" in cond["triggerPolicy"]["condition"]
    loop = spec["components"][f"comp-{LOOP}"]["dag"]["tasks"]
    inner = spec["components"][f"comp-{COND}"]["dag"]["tasks"]
    assert set(loop) == {"extract-frames", "shard-dataset"}
    assert loop["shard-dataset"]["dependentTasks"] == ["extract-frames"]
    assert set(inner) | set(loop) | {"plan-partitions", "commit-shards"} == set(STEP_NAMES)
    for task, ups in GOLDEN_DAG.items():
        assert set(inner[task].get("dependentTasks", [])) == ups, task
        # every later step reads the committed dataset version
        if "shards" in inner[task]["inputs"].get("artifacts", {}):
            art = inner[task]["inputs"]["artifacts"]["shards"]["componentInputArtifact"]
            assert art == "pipelinechannel--commit-shards-shards", task
    # the fan-out: over plan-partitions' list, at most data_parallelism partitions at a time
    iterator = root[LOOP]["parameterIterator"]
    assert iterator["items"]["inputParameter"] == "pipelinechannel--plan-partitions-Output"
    assert root[LOOP]["iteratorPolicy"]["parallelismLimit"] == ClusterSettings().data_parallelism
    collected = root["commit-shards"]["inputs"]["artifacts"]["partitions"]
    assert collected["taskOutputArtifact"] == {"outputArtifactKey": "pipelinechannel--shard-dataset-shards", "producerTask": LOOP}  # fmt: skip
    # caching off where a cache hit would be wrong; retries on the data steps, per partition
    assert loop["extract-frames"]["cachingOptions"] == {}
    assert root["commit-shards"]["cachingOptions"] == {}
    assert inner["train-model"]["cachingOptions"] == {}
    assert inner["promote-model"]["cachingOptions"] == {}
    assert loop["shard-dataset"]["cachingOptions"]["enableCache"] is True
    for task in (loop["extract-frames"], loop["shard-dataset"], root["commit-shards"]):
        assert task["retryPolicy"]["maxRetryCount"] == 3


def test_images_are_version_tagged_and_nothing_is_pip_installed(
    compiled: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, docs = compiled
    for name, ex in docs[0]["deploymentSpec"]["executors"].items():
        c = ex["container"]
        assert c["image"].endswith((f":{__version__}-train", f":{__version__}-data")), name
        assert ":latest" not in c["image"]
        assert "pip install" not in " ".join(c["command"]) or "kfp==" in " ".join(c["command"])
        assert "packages_to_install" not in str(c)
    gpu = docs[0]["deploymentSpec"]["executors"]["exec-evaluate-challenger"]["container"][
        "resources"
    ]
    assert (
        gpu["accelerator"]["resourceType"] == "nvidia.com/gpu"
        and gpu["accelerator"]["resourceCount"] == "1"
    )


def test_platform_settings(compiled: tuple[Path, list[dict[str, Any]]]) -> None:
    _, docs = compiled
    ex = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in (
        "exec-plan-partitions",
        "exec-extract-frames",
        "exec-shard-dataset",
        "exec-commit-shards",
        "exec-train-model",
        "exec-promote-model",
    ):
        assert ex[name]["pvcMount"][0]["mountPath"] == "/data"
        assert ex[name]["secretAsEnv"][0]["keyToEnv"][0]["envVar"] == "AWS_ACCESS_KEY_ID"
        assert int(ex[name]["activeDeadlineSeconds"]) > 0
    ev = ex["exec-evaluate-challenger"]
    assert ev["nodeSelector"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert ev["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_k8s_manifests_validate_against_kfp_crds(tmp_path: Path, shared: Path) -> None:
    out = compile_pipeline(tmp_path / "crs.yaml", manifests=True, namespace="kubeflow")
    kinds = [d["kind"] for d in yaml.safe_load_all(out.read_text()) if d]
    assert kinds == ["Pipeline", "PipelineVersion"]
    assert validate_manifests(out, shared / "k8s-schemas") == []
    # a broken document is reported
    bad = tmp_path / "bad.yaml"
    bad.write_text(out.read_text().replace("pipelineName:", "pipelineNaem:"))
    assert validate_manifests(bad, shared / "k8s-schemas")


def test_compile_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ui.yaml"
    argv = ["compile", "-o", str(out), "--eval-gpus", "0", "--storage-secret", ""]
    argv += ["--train-runtime", "torch-distributed"]
    argv += ["--train-runtime-kind", "ClusterTrainingRuntime", "--train-cpu", "16"]
    assert main(argv) == 0
    assert "Upload pipeline" in capsys.readouterr().out
    doc = next(yaml.safe_load_all(out.read_text()))
    task = doc["components"][f"comp-{COND}"]["dag"]["tasks"]["train-model"]
    launch = task["inputs"]["parameters"]["launch"]["runtimeValue"]["constant"]
    assert launch["runtime"] == "torch-distributed" and launch["cpu"] == "16"
    assert launch["runtime_kind"] == "ClusterTrainingRuntime"
    assert "accelerator" not in str(doc["deploymentSpec"]["executors"]["exec-evaluate-champion"])


def test_train_step_takes_one_launch_spec(compiled: tuple[Path, list[dict[str, Any]]]) -> None:
    """The launch settings reach the train step as one structured parameter that the launch
    spec reads back, run-time values as placeholders and cluster settings as constants."""
    from sam2_core.launch.spec import LaunchSpec

    _, docs = compiled
    spec = docs[0]
    inputs = spec["components"]["comp-train-model"]["inputDefinitions"]["parameters"]
    assert inputs["launch"]["parameterType"] == "STRUCT"
    assert "launch spec" in inputs["launch"]["description"]
    task = spec["components"][f"comp-{COND}"]["dag"]["tasks"]["train-model"]
    launch = task["inputs"]["parameters"]["launch"]["runtimeValue"]["constant"]
    assert "pipelinechannel--num_nodes" in launch["num_nodes"]
    assert "pipelinechannel--launcher_backend" in launch["engine"]
    fixed = {k: v for k, v in launch.items() if "pipelinechannel" not in str(v)}
    parsed = LaunchSpec.from_dict(fixed)
    assert parsed.pvc_claim == "sam2-data"
    assert parsed.secret_env["AWS_ACCESS_KEY_ID"] == ("mlpipeline-minio-artifact", "accesskey")
    assert parsed.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def test_k8s_manifests_validate_with_the_packaged_crds(
    tmp_path: Path, shared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --crd-dir: the CRDs shipped in the package validate the output (never a silent skip);
    they are the same files as the test fixtures."""
    for name in CRD_FILES.values():
        assert (PACKAGED_CRD_DIR / name).read_bytes() == (
            shared / "k8s-schemas" / name
        ).read_bytes()
    out = tmp_path / "crs.yaml"
    assert main(["compile", "-o", str(out), "--k8s-manifests"]) == 0
    assert f"validated against the KFP CRDs in {PACKAGED_CRD_DIR}" in capsys.readouterr().out
    assert validate_manifests(out) == []


def test_k8s_manifests_refuse_a_crd_dir_without_the_crds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crs.yaml"
    argv = ["compile", "-o", str(out), "--k8s-manifests", "--crd-dir", str(tmp_path / "none")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pipelines.kubeflow.org_pipelines.yaml" in err
    assert not out.exists()  # nothing unvalidated is written
    with pytest.raises(FileNotFoundError, match="lacks"):
        validate_manifests(compile_pipeline(out, manifests=True), tmp_path)


def _executor_images(path: Path) -> dict[str, str]:
    doc = next(yaml.safe_load_all(path.read_text()))
    return {n: e["container"]["image"] for n, e in doc["deploymentSpec"]["executors"].items()}


def _launch_constant(path: Path) -> dict[str, Any]:
    doc = next(yaml.safe_load_all(path.read_text()))
    task = doc["components"]["comp-condition-2"]["dag"]["tasks"]["train-model"]
    return dict(task["inputs"]["parameters"]["launch"]["runtimeValue"]["constant"])


def test_image_repo_sets_every_step_and_the_training_pods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(IMAGE_REPO_ENV, raising=False)
    monkeypatch.delenv(IMAGE_TAG_ENV, raising=False)
    repo = "registry.example.com/team/sam2-kubeflow"
    out = tmp_path / "mine.yaml"
    assert main(["compile", "-o", str(out), "--image-repo", repo, "--image-tag", "abc123"]) == 0
    images = _executor_images(out)
    assert set(images) == {f"exec-{s}" for s in STEP_NAMES}
    assert set(images.values()) == {f"{repo}:abc123-data", f"{repo}:abc123-train"}
    assert images["exec-train-model"] == f"{repo}:abc123-train"
    assert images["exec-shard-dataset"] == f"{repo}:abc123-data"
    assert _launch_constant(out)["image"] == f"{repo}:abc123-train"  # the training pods
    # the environment variables do the same; the tag defaults to the package version
    monkeypatch.setenv(IMAGE_REPO_ENV, repo)
    env_out = tmp_path / "env.yaml"
    assert main(["compile", "-o", str(env_out)]) == 0
    assert set(_executor_images(env_out).values()) == {
        f"{repo}:{__version__}-data",
        f"{repo}:{__version__}-train",
    }
    # an explicit --train-image still wins for the training pods
    own = tmp_path / "own.yaml"
    assert main(["compile", "-o", str(own), "--train-image", "other.io/train:7"]) == 0
    assert _launch_constant(own)["image"] == "other.io/train:7"
    assert _executor_images(own)["exec-train-model"] == f"{repo}:{__version__}-train"


def test_default_images_leave_the_launch_spec_alone(
    compiled: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, _ = compiled
    assert "image" not in _launch_constant(path)  # "" = this version's training image
    assert set(_executor_images(path).values()) == {
        ImageSettings().ref("data"),
        ImageSettings().ref("train"),
    }


@pytest.mark.parametrize(
    ("repo", "tag"), [("reg.io/x:1", ""), ("reg.io/x@sha256:ab", ""), ("", "latest"), ("", "a b")]
)
def test_bad_image_settings_are_refused(
    repo: str, tag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.yaml"
    assert main(["compile", "-o", str(out), "--image-repo", repo, "--image-tag", tag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--image-repo/--image-tag" in err
    assert not out.exists()


def test_run_form_launch_defaults_agree_with_the_launch_spec_or_are_listed(
    compiled: tuple[Path, list[dict[str, Any]]],
) -> None:
    """Each run-form parameter that feeds the launch spec defaults to the spec's default, except
    the deliberate differences listed in RUN_FORM_LAUNCH (the prod overlay's shape)."""
    _, docs = compiled
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    spec = LaunchSpec()
    form_to_spec = {
        "launcher_backend": "engine",
        "num_nodes": "num_nodes",
        "nproc_per_node": "nproc_per_node",
        "gpus_per_process": "gpus_per_process",
        "train_timeout_hours": "timeout_hours",
        "experiment": "experiment",
    }
    for form, field_name in form_to_spec.items():
        expected = RUN_FORM_LAUNCH.get(field_name, getattr(spec, field_name))
        assert params[form]["defaultValue"] == expected, form
    differs = {f for f in form_to_spec.values() if f in RUN_FORM_LAUNCH}
    assert differs == set(RUN_FORM_LAUNCH)
    for name in RUN_FORM_LAUNCH:
        assert RUN_FORM_LAUNCH[name] != getattr(spec, name), f"{name}: no difference to list"
    prod = OVERLAYS["prod"].spec()
    assert (prod.num_nodes, prod.nproc_per_node, prod.gpus_per_process) == (
        RUN_FORM_LAUNCH["num_nodes"],
        RUN_FORM_LAUNCH["nproc_per_node"],
        RUN_FORM_LAUNCH["gpus_per_process"],
    )


def test_compiled_resources_that_fail_the_crds_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pipelines.compile as compile_module

    monkeypatch.setattr(
        compile_module, "validate_manifests", lambda out, crd_dir: ["a: bad", "b: bad"]
    )
    out = tmp_path / "crs.yaml"
    assert main(["compile", "-o", str(out), "--k8s-manifests"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a: bad (and 1 more)" in err
    assert not out.exists()
