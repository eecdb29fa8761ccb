"""Compiled pipeline: loads back with kfp, has the expected steps and cluster settings (golden)."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.compile import check_ir, compile_pipeline, validate_manifests
from pipelines.finetune import STEP_NAMES, ClusterSettings
from sam2_core import __version__
from sam2_core.cli import main

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
