"""manifests/: kustomize builds, strict schema validation, restricted pods, least-privilege RBAC,
generated files up to date, and the CronJob's retraining path dry-run here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sam2_core import image_ref
from sam2_core.cli import main as sam2kf
from sam2_core.commands import retrain
from sam2_core.launch.pytorchjob import render_pytorchjob
from sam2_core.launch.render_manifests import (
    CONFIGMAP_NAME,
    OVERLAYS,
    PVC_CLAIM,
    TRAINER_ROLE_RULES,
    rendered_files,
    trainer_overlay_name,
)
from sam2_core.launch.spec import image_is_pinned, job_name_for_run
from sam2_core.launch.validate import (
    check_restricted_pod,
    pod_specs_of,
    validate_pytorchjob,
    validate_trainer_object,
)

from .k8s_helpers import K8S_VERSION, MANIFESTS, OVERLAY_NAMES, by_kind, crd_path, kustomize

CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job", "CronJob"}
#: What manifests/storage/<overlay> holds (and no workload overlay may: `delete -k` spares it).
STORAGE_KINDS = {"Namespace", "PersistentVolumeClaim"}
EXPECTED_ROLE_RULES = [
    {
        "apiGroups": ["kubeflow.org"],
        "resources": ["pytorchjobs"],
        "verbs": ["create", "get", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


@pytest.fixture(params=OVERLAY_NAMES)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _objs(overlay: str) -> list[dict[str, Any]]:
    return kustomize(MANIFESTS / "overlays" / overlay)


def test_generated_files_are_up_to_date() -> None:
    """pytorchjob.yaml / train-config.yaml are exactly what render_manifests produces."""
    for path, text in rendered_files(MANIFESTS).items():
        assert path.exists(), f"{path} missing: python -m sam2_core.launch.render_manifests"
        assert path.read_text() == text, (
            f"{path} stale: python -m sam2_core.launch.render_manifests"
        )


def test_overlay_has_every_kind_in_its_namespace(overlay: str) -> None:
    objs = _objs(overlay)
    kinds = sorted(o["kind"] for o in objs)
    # two Jobs: the data Job (Indexed) and its commit Job
    assert kinds == sorted([*CORE_KINDS, "ServiceAccount", "Job", "PyTorchJob"])
    ns = OVERLAYS[overlay].namespace
    for o in objs:
        assert o["metadata"]["namespace"] == ns, o["metadata"]["name"]
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")


def test_core_kinds_validate_strictly(overlay: str) -> None:
    import kubernetes_validate

    for o in _objs(overlay):
        if o["kind"] in CORE_KINDS:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo() -> None:
    import kubernetes_validate

    (cron,) = by_kind(_objs("dev"), "CronJob")
    cron["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, K8S_VERSION, strict=True)


def test_pytorchjob_matches_renderer_and_crd(overlay: str, shared: Path) -> None:
    (job,) = by_kind(_objs(overlay), "PyTorchJob")
    assert job == render_pytorchjob(OVERLAYS[overlay].spec(), OVERLAYS[overlay].one_off_run())
    assert validate_pytorchjob(job, crd_path(shared)) == []


def test_every_pod_is_restricted(overlay: str) -> None:
    pods = [p for o in _objs(overlay) for p in pod_specs_of(o)]
    assert len(pods) >= 3  # data Job, CronJob, PyTorchJob replica(s)
    for where, pod in pods:
        assert check_restricted_pod(pod) == [], where


def test_role_grants_exactly_what_the_launcher_needs(overlay: str) -> None:
    objs = _objs(overlay)
    (role,) = by_kind(objs, "Role")
    assert role["rules"] == EXPECTED_ROLE_RULES
    (binding,) = by_kind(objs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "sam2kf-launcher",
            "namespace": OVERLAYS[overlay].namespace,
        }
    ]
    # only the launcher identity reaches the API; workload pods get no token
    accounts = {
        p.get("serviceAccountName"): p.get("automountServiceAccountToken")
        for o in objs
        for _, p in pod_specs_of(o)
    }
    assert accounts == {"sam2kf-trainer": False, "sam2kf-launcher": True}
    sas = {s["metadata"]["name"]: s for s in by_kind(objs, "ServiceAccount")}
    assert sas["sam2kf-trainer"]["automountServiceAccountToken"] is False


def test_images_are_pinned_to_the_package_version(overlay: str) -> None:
    allowed = {image_ref(flavour="train"), image_ref(flavour="data")}
    for o in _objs(overlay):
        for where, pod in pod_specs_of(o):
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                assert image_is_pinned(c["image"]), where
                assert c["image"] in allowed, (where, c["image"])


def _storage(overlay: str) -> list[dict[str, Any]]:
    return kustomize(MANIFESTS / "storage" / overlay)


def test_storage_holds_the_namespace_and_an_rwx_pvc_with_a_storage_class(overlay: str) -> None:
    import kubernetes_validate

    objs = _storage(overlay)
    assert sorted(o["kind"] for o in objs) == sorted(STORAGE_KINDS)
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    ns = OVERLAYS[overlay].namespace
    (namespace,) = by_kind(objs, "Namespace")
    assert namespace["metadata"]["name"] == ns
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (pvc,) = by_kind(objs, "PersistentVolumeClaim")
    assert pvc["metadata"]["namespace"] == ns
    assert pvc["metadata"]["name"] == PVC_CLAIM == OVERLAYS[overlay].spec().pvc_claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert (
        pvc["spec"]["resources"]["requests"]["storage"] == {"dev": "20Gi", "prod": "2Ti"}[overlay]
    )
    # the one storage-class setting: a documented placeholder in storage-class.yaml
    setting = MANIFESTS / "storage" / overlay / "storage-class.yaml"
    cls = yaml.safe_load(setting.read_text())["spec"]["storageClassName"]
    assert cls and pvc["spec"]["storageClassName"] == cls
    assert (
        "kubectl get storageclass" in setting.read_text() and "ReadWriteMany" in setting.read_text()
    )


@pytest.mark.parametrize("trainer", [False, True], ids=["pytorchjob", "trainjob"])
def test_delete_k_of_an_overlay_spares_the_data(overlay: str, trainer: bool) -> None:
    """`kubectl delete -k` deletes what the kustomization renders: no workload overlay renders
    the PVC or the namespace (which would take its PVCs along), yet every pod mounts that PVC."""
    objs = _trainer_objs(overlay) if trainer else _objs(overlay)
    assert not [o for o in objs if o["kind"] in STORAGE_KINDS]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for o in objs
        for _, pod in pod_specs_of(o)
        for v in pod.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert claims == {PVC_CLAIM}
    (pvc,) = by_kind(_storage(overlay), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == PVC_CLAIM


def test_cronjob_schedule_policy(overlay: str) -> None:
    objs = _objs(overlay)
    (cron,) = by_kind(objs, "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    # the run id (hence the PyTorchJob name) is the Job's name: stable across pod retries
    assert env["RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']"
    )
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == CONFIGMAP_NAME
    assert by_kind(objs, "ConfigMap")[0]["metadata"]["name"] == CONFIGMAP_NAME


def test_overlay_sizes() -> None:
    dev = render_pytorchjob(OVERLAYS["dev"].spec(), OVERLAYS["dev"].one_off_run())
    prod = render_pytorchjob(OVERLAYS["prod"].spec(), OVERLAYS["prod"].one_off_run())
    assert list(dev["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    dev_c = dev["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in dev_c["resources"]["limits"]
    assert "model=tiny" in dev_c["command"] and "trainer.device=cpu" in dev_c["command"]
    assert prod["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1  # 2 nodes
    assert prod["spec"]["nprocPerNode"] == "8"
    prod_c = prod["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert prod_c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "model=sam2.1_hiera_b+" in prod_c["command"]


def test_every_manifest_file_opens_with_operating_commands() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert len(files) >= 12
    for f in files:
        head = [ln for ln in f.read_text().splitlines() if ln.startswith("#")]
        text = "\n".join(head).lower()
        assert f.read_text().startswith("#"), f
        for word in ("apply:", "check:", "logs:", "clean up:"):
            assert word in text, f"{f} lacks '{word}' in its header"


def _write_configmap(overlay: str, dest: Path) -> Path:
    (cm,) = [
        c for c in by_kind(_objs(overlay), "ConfigMap") if c["metadata"]["name"] == CONFIGMAP_NAME
    ]
    for key, value in cm["data"].items():
        (dest / key).write_text(value)
    return dest


def test_cronjob_run_renders_a_valid_job(
    overlay: str, tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CronJob's program, fed the overlay's ConfigMap, renders the same job as the one-off
    manifest except for the run-specific name and data locations."""
    monkeypatch.setenv("POD_NAMESPACE", OVERLAYS[overlay].namespace)
    cfg = _write_configmap(overlay, tmp_path)
    plan = retrain.cron_plan(cfg, "sam2kf-retrain-29371200")
    assert plan["mode"] == "pytorchjob"
    job = plan["job"]
    assert validate_pytorchjob(job, crd_path(shared)) == []
    assert job["metadata"]["name"] == job_name_for_run("sam2kf-retrain-29371200")
    assert plan["shards"] == "/data/work/sam2kf-retrain-29371200/shards"
    assert plan["data_partitions"] == 1  # retrain.json may set more (in turn, then the commit)
    one_off = render_pytorchjob(OVERLAYS[overlay].spec(), OVERLAYS[overlay].one_off_run())

    def normalise(j: dict[str, Any]) -> dict[str, Any]:
        j = copy.deepcopy(j)
        j["metadata"]["name"] = "X"
        j["metadata"].pop("annotations", None)  # the run-id annotation of scheduled jobs
        j["spec"].pop("elasticPolicy", None)
        for r in j["spec"]["pytorchReplicaSpecs"].values():
            pod = r["template"]["spec"]
            pod.pop("initContainers", None)
            r["template"]["metadata"]["annotations"].pop("sam2kf.io/run-id", None)
            pod["containers"][0]["command"] = [
                a
                for a in pod["containers"][0]["command"]
                if not a.startswith(("data.", "trainer.output_dir"))
            ]
        return j

    assert normalise(job) == normalise(one_off)


def test_cronjob_kfp_mode(tmp_path: Path) -> None:
    cfg = _write_configmap("prod", tmp_path)
    data = json.loads((cfg / "retrain.json").read_text())
    data.update(kfp_host="https://kfp.example.com", submit_args=["--experiment", "retrain"])
    (cfg / "retrain.json").write_text(json.dumps(data))
    plan = retrain.cron_plan(cfg, "r1")
    assert plan == {
        "mode": "kfp",
        "command": [
            "sam2kf",
            "submit",
            "--host",
            "https://kfp.example.com",
            "--experiment",
            "retrain",
        ],
    }


def test_cron_cli_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_configmap("dev", tmp_path)
    argv = ["retrain", "cron", "--config-dir", str(cfg), "--run-id", "manual-1", "--dry-run"]
    assert sam2kf(argv) == 0
    plan = yaml.safe_load(capsys.readouterr().out)
    assert plan["job"]["kind"] == "PyTorchJob"
    assert plan["output_dir"] == "/data/runs/manual-1"


def test_bad_configmap_is_reported_with_its_file(tmp_path: Path) -> None:
    cfg = _write_configmap("dev", tmp_path)
    data = json.loads((cfg / "launch.json").read_text())
    data["gpu_per_node"] = 1
    (cfg / "launch.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=r"launch\.json.*gpu_per_node"):
        retrain.cron_plan(cfg, "r1")


def test_cronjob_run_end_to_end_against_a_loopback_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CronJob's program for real: demo videos -> extract -> shards -> PyTorchJob created
    through the launcher (loopback API server) and followed to Succeeded; a retried pod of the
    same run attaches to that job instead of creating a second one."""
    from sam2_core.data.prep.demo import write_demo_dataset

    from .launcher_stub import ApiState, FakeApiServer

    monkeypatch.setenv("POD_NAMESPACE", "sam2kf-dev")
    cfg = _write_configmap("dev", tmp_path)
    data = json.loads((cfg / "retrain.json").read_text())
    data.update(
        raw=str(tmp_path / "raw"),
        work_root=str(tmp_path / "work"),
        output_root=str(tmp_path / "runs"),
        poll_s=0.01,
        data_partitions=2,  # the partitioned data flow, in turn in the CronJob's pod
    )
    (cfg / "retrain.json").write_text(json.dumps(data))
    write_demo_dataset(
        dst=str(tmp_path / "raw"), num_videos=2, num_frames=12, sizes=((64, 96),) * 2
    )

    # What the training pods would leave behind (the stub runs no pods).
    final = tmp_path / "runs" / "sam2kf-retrain-1" / "model_final.pt"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    state = ApiState(script=["Created", "Running", "Succeeded"])
    with FakeApiServer(state) as api:
        assert retrain.run_cron(cfg, "sam2kf-retrain-1", api_client=api.api_client()) == 0
        assert retrain.run_cron(cfg, "sam2kf-retrain-1", api_client=api.api_client()) == 0
    shards = tmp_path / "work" / "sam2kf-retrain-1" / "shards"
    assert json.loads((shards / "manifest.json").read_text())["params"]["num_partitions"] == 2
    assert state.creates == 1
    (name,) = state.jobs
    assert name == job_name_for_run("sam2kf-retrain-1")
    job = state.jobs[name]
    assert job["metadata"]["namespace"] == "sam2kf-dev"
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert f"data.shards={tmp_path}/work/sam2kf-retrain-1/shards" in command


# ------------------------------------------------------------------ Kubeflow Trainer v2 variant
def _trainer_objs(overlay: str) -> list[dict[str, Any]]:
    return kustomize(MANIFESTS / "overlays" / trainer_overlay_name(overlay))


def test_trainer_overlay_swaps_the_pytorchjob_for_a_runtime_and_trainjob(
    overlay: str, shared: Path
) -> None:
    import kubernetes_validate

    objs = _trainer_objs(overlay)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted([*CORE_KINDS, "ServiceAccount", "Job", "TrainingRuntime", "TrainJob"])
    ns = OVERLAYS[overlay].namespace
    for o in objs:
        assert o["metadata"]["namespace"] == ns, o["metadata"]["name"]
        if o["kind"] in CORE_KINDS:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    (runtime,) = by_kind(objs, "TrainingRuntime")
    (job,) = by_kind(objs, "TrainJob")
    for obj in (runtime, job):
        assert validate_trainer_object(obj, shared / "k8s-schemas") == [], obj["kind"]
    assert job["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"] == "sam2kf-torch"
    assert job["spec"]["suspend"] is True  # resumed once the data Job is done
    pods = [p for o in objs for p in pod_specs_of(o)]
    assert len(pods) >= 3  # data Job, CronJob, the runtime's node pods
    for where, pod in pods:
        assert check_restricted_pod(pod) == [], where
    (role,) = by_kind(objs, "Role")
    assert role["rules"] == TRAINER_ROLE_RULES
    (cm,) = by_kind(objs, "ConfigMap")
    assert json.loads(cm["data"]["launch.json"])["engine"] == "trainjob"
    assert "retrain.json" in cm["data"]


def test_cronjob_run_on_trainer_renders_a_valid_trainjob(
    overlay: str, tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", OVERLAYS[overlay].namespace)
    (cm,) = by_kind(_trainer_objs(overlay), "ConfigMap")
    for key, value in cm["data"].items():
        (tmp_path / key).write_text(value)
    plan = retrain.cron_plan(tmp_path, "sam2kf-retrain-7")
    assert plan["mode"] == "trainjob"
    job = plan["job"]
    assert job["kind"] == "TrainJob" and job["metadata"]["namespace"] == OVERLAYS[overlay].namespace
    assert validate_trainer_object(job, shared / "k8s-schemas") == []
    assert job["metadata"]["name"] == job_name_for_run("sam2kf-retrain-7")


def test_data_job_program_writes_shards_and_keeps_them(tmp_path: Path) -> None:
    """The base data Job's command (`sam2kf retrain data --demo-if-empty`), run twice."""
    raw, frames, shards = (str(tmp_path / n) for n in ("raw", "frames", "shards"))
    argv = ["retrain", "data", "--raw", raw, "--frames", frames, "--shards", shards]
    argv += ["--demo-if-empty"]
    assert sam2kf(argv) == 0
    manifest = tmp_path / "shards" / "manifest.json"
    first = manifest.read_bytes()
    assert sam2kf(argv) == 0  # a re-run keeps the finished shard set
    assert manifest.read_bytes() == first


# ----------------------------------------------------- the launcher's requests against its Role
def _permissions(requests: list[tuple[str, str]]) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, name) of each resource request; discovery (non-resource URLs
    under /apis/<group>/<version>, granted to every authenticated user) is left out."""
    out = set()
    for method, path in requests:
        parts = path.strip("/").split("/")
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        if not rest:
            continue
        if rest[0] == "namespaces":
            rest = rest[2:]
        resource, name = rest[0], rest[1] if len(rest) > 1 else ""
        if len(rest) > 2:
            resource += "/" + rest[2]
        verb = {"POST": "create", "DELETE": "delete"}.get(method) or ("get" if name else "list")
        out.add((group, resource, verb, name))
    return out


def _granted(rules: list[dict[str, Any]], perm: tuple[str, str, str, str]) -> bool:
    group, resource, verb, name = perm
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


@pytest.mark.parametrize("trainer", [False, True], ids=["pytorchjob", "trainjob"])
def test_role_is_exactly_what_the_launcher_calls(overlay: str, trainer: bool) -> None:
    """Replay the launcher (engine=auto, a run to success and one to timeout) against the
    loopback API: every request is granted by the overlay's Role, every grant is used."""
    import dataclasses
    import io

    from sam2_core.launch.engines import make_engine
    from sam2_core.launch.launcher import JobTimeout
    from sam2_core.launch.render_manifests import trainer_spec
    from sam2_core.launch.spec import JobRun

    from .launcher_stub import ApiState, FakeApiServer

    objs = _trainer_objs(overlay) if trainer else _objs(overlay)
    (role,) = by_kind(objs, "Role")
    spec = trainer_spec(OVERLAYS[overlay]) if trainer else OVERLAYS[overlay].spec()
    run = JobRun(run_id="r1", train_args=["data.shards=/data/s", "trainer.output_dir=/data/o"])
    used: set[tuple[str, str, str, str]] = set()
    for script, hours in ((["Created", "Running", "Succeeded"], 0.0), (["Running"], 0.1 / 3600)):
        state = ApiState(script=script, served={"trainjobs" if trainer else "pytorchjobs"})
        with FakeApiServer(state) as api:
            engine = make_engine(
                "auto", api_client=api.api_client(), out=io.StringIO(), poll_interval_s=0.02
            )
            try:
                engine.run(dataclasses.replace(spec, engine="auto", timeout_hours=hours), run)
            except JobTimeout:
                assert hours
        used |= _permissions(state.requests)
    for perm in sorted(used):
        assert _granted(role["rules"], perm), f"the Role does not grant {perm}"
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert any((g, res, v) == (group, resource, verb) for g, res, v, _ in used), (
                        f"the Role grants {verb} {resource} ({group!r}), which the launcher never uses"
                    )


# ------------------------------------------------------------------------ your registry, your images
def _images_in(obj: Any) -> list[str]:
    """Every ``image`` value in ``obj``, the launch specs inside ConfigMaps included."""
    if isinstance(obj, dict):
        found = [v for k, v in obj.items() if k == "image" and isinstance(v, str)]
        if obj.get("kind") == "ConfigMap":
            found += [json.loads(v)["image"] for k, v in obj["data"].items() if k == "launch.json"]
        return found + [i for v in obj.values() for i in _images_in(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in _images_in(v)]
    return []


def test_default_images_everywhere_are_the_versioned_names(overlay: str) -> None:
    allowed = {image_ref(flavour="train"), image_ref(flavour="data")}
    for objs in (_objs(overlay), _trainer_objs(overlay)):
        assert set(_images_in(objs)) <= allowed and _images_in(objs)


def test_your_registry_reaches_every_image_of_the_overlays(tmp_path: Path) -> None:
    """The README's two steps: render the generated files with --image-repo/--image-tag, then
    `kustomize edit set image` for the base's data Job and CronJob (appended here as the
    `images:` entry that command writes). Afterwards no image of any overlay, the TrainJob's
    trainer image and the CronJob's launch.json included, is the default one."""
    import shutil

    from sam2_core.launch.images import ImageSettings
    from sam2_core.launch.render_manifests import main as render

    repo, tag = "registry.example.com/team/sam2-kubeflow", "abc123"
    root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, root)
    assert render(["--root", str(root), "--image-repo", repo, "--image-tag", tag]) == 0
    mine = ImageSettings(repository=repo, tag=tag)
    for name in [*OVERLAY_NAMES, *(trainer_overlay_name(n) for n in OVERLAY_NAMES)]:
        k = root / "overlays" / name / "kustomization.yaml"
        k.write_text(
            k.read_text()
            + f"images:\n- name: {ImageSettings().repository}\n  newName: {repo}\n"
            + f"  newTag: {tag}-data\n"
        )
        images = set(_images_in(kustomize(root / "overlays" / name)))
        assert images and images <= {mine.ref("data"), mine.ref("train")}, (name, images)
    prod = set(_images_in(kustomize(root / "overlays" / "prod-trainer")))
    assert mine.ref("train") in prod  # the CUDA image stays the training image


# ------------------------------------------------------------------ the data Job as an Indexed Job
def _arg(container: dict[str, Any], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{flag}=")]
    return value


def test_data_job_is_indexed_and_followed_by_the_commit(overlay: str) -> None:
    """One pod per partition (JOB_COMPLETION_INDEX), then the commit Job over all of them; the
    partition count is the same in both Jobs, and the training pods wait for the commit."""
    jobs = {j["metadata"]["name"]: j for j in by_kind(_objs(overlay), "Job")}
    data, commit = jobs["sam2kf-extract-shard"], jobs["sam2kf-commit-shards"]
    spec = data["spec"]
    assert spec["completionMode"] == "Indexed"
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1  # a failed pod retries its own partition
    (worker,) = spec["template"]["spec"]["containers"]
    assert worker["command"] == ["sam2kf", "retrain", "data"]
    assert int(_arg(worker, "--num-partitions")) == spec["completions"]
    assert "--no-commit" in worker["args"] and "--partition" not in str(worker["args"])
    (committer,) = commit["spec"]["template"]["spec"]["containers"]
    assert committer["command"] == ["sam2kf", "retrain", "commit"]
    assert int(_arg(committer, "--num-partitions")) == spec["completions"]
    assert _arg(committer, "--shards") == _arg(worker, "--shards")
    assert commit["spec"].get("completionMode", "NonIndexed") == "NonIndexed"
    (train,) = by_kind(_objs(overlay), "PyTorchJob")
    wait = train["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["initContainers"][0]
    assert f"{_arg(worker, '--shards')}/manifest.json" in wait["command"]
    assert OVERLAYS[overlay].name != "prod" or spec["completions"] > 1


def test_indexed_data_job_program_then_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Indexed Job's pods (`sam2kf retrain data` with $JOB_COMPLETION_INDEX) and the commit
    Job (`sam2kf retrain commit`): a partial set is refused with the missing partition named;
    once every partition is done the commit gives the single-pod dataset."""
    from sam2_core.data.prep.demo import write_demo_dataset

    raw, frames, shards = (str(tmp_path / n) for n in ("raw", "frames", "shards"))
    write_demo_dataset(dst=raw, num_videos=4, num_frames=12, sizes=((64, 96),) * 4)
    argv = ["retrain", "data", "--raw", raw, "--frames", frames, "--shards", shards]
    argv += ["--num-partitions", "2", "--no-commit"]
    commit = ["retrain", "commit", "--shards", shards, "--num-partitions", "2"]
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert sam2kf(argv) == 0
    capsys.readouterr()
    assert sam2kf([*commit, "--timeout", "0"]) == 2
    assert "partitions 0 of 2 not complete" in capsys.readouterr().err
    assert not (tmp_path / "shards" / "manifest.json").exists()
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert sam2kf(argv) == 0
    assert sam2kf(commit) == 0
    single = str(tmp_path / "single")
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    assert sam2kf(["retrain", "data", "--raw", raw, "--frames", frames, "--shards", single]) == 0
    from sam2_core.data.readers.shards import ShardIndex

    two, one = ShardIndex.open(shards, verify=True), ShardIndex.open(single, verify=True)
    assert two.manifest.content_hash == one.manifest.content_hash
    assert sorted(v.video_id for v in two.videos) == sorted(v.video_id for v in one.videos)
    # an index outside the Job's completions is one line naming the fix
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert sam2kf(argv) == 2
    assert "--num-partitions equal to the Job's completions" in capsys.readouterr().err


def test_cronjob_takes_the_kfp_token_from_a_secret_never_from_argv() -> None:
    doc = yaml.safe_load(
        (
            Path(__file__).resolve().parents[2] / "manifests" / "base" / "retrain-cronjob.yaml"
        ).read_text()
    )
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["KFP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "sam2kf-kfp-token", "key": "token", "optional": True}
    argv = [*container.get("command", []), *container.get("args", [])]
    assert not any("token" in a.lower() for a in argv)
