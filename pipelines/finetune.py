"""The fine-tuning pipeline (wiring only; every step is one component in ``components/``).

raw videos -> extract (new videos only) -> shard -> commit -> train (PyTorchJob or local
torchrun) -> evaluate the challenger AND the current champion on the same split -> promote if
better. Extract and shard fan out over ``data_partitions`` partitions of the videos (a
``dsl.ParallelFor`` over the list that ``plan-partitions`` returns, at most
``ClusterSettings.data_parallelism`` at a time; each iteration extracts, then shards, its own
videos, cached and retried on its own); the commit step merges the partitions
(``dsl.Collected``) into one dataset version and decides "new videos?" over all of them.

Runtime choices are pipeline parameters (visible in the KFP UI's "Create run" form). Cluster
plumbing that KFP needs at compile time (PVC, secrets, node selectors, tolerations, GPU on the
evaluation step, timeouts) comes from :class:`ClusterSettings` (``sam2kf compile`` flags);
``kfp.local`` ignores it, so the same pipeline runs on a laptop. The training launch is one
structured parameter, the launch spec, built by :func:`launch_parameter` from both.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl, kubernetes

from components.commit_shards import commit_shards
from components.evaluate import evaluate_challenger
from components.evaluate_champion import evaluate_champion
from components.extract import extract_frames
from components.plan_partitions import plan_partitions
from components.promote import promote_model
from components.shard import shard_dataset
from components.train import train_model
from sam2_core.launch.images import ImageSettings
from sam2_core.launch.spec import LaunchSpec, storage_secret_env

PIPELINE_NAME = "sam2-finetune"

#: Step (task) names of the compiled pipeline, in execution order; golden-tested.
STEP_NAMES = (
    "plan-partitions",
    "extract-frames",
    "shard-dataset",
    "commit-shards",
    "train-model",
    "evaluate-challenger",
    "evaluate-champion",
    "promote-model",
)

#: Run-form defaults of the launch fields that differ from :class:`LaunchSpec`'s, on purpose and
#: only here: the spec's defaults are the smallest launch that runs anywhere (one CPU process,
#: for ``sam2kf`` and the library), while the KFP run form starts from the production fine-tune
#: the pipeline exists for (the prod overlay's 2 nodes x 8 GPUs, the SA-V recipe). Every other
#: launch parameter of the form (engine, timeout, overrides) takes the spec's default.
RUN_FORM_LAUNCH: dict[str, Any] = {
    "num_nodes": 2,
    "nproc_per_node": 8,
    "gpus_per_process": 1,
    "experiment": "sav_finetune",
}


@dataclass
class ClusterSettings:
    """Compile-time Kubernetes settings (ignored by ``kfp.local``)."""

    #: RWX PVC mounted on every step (and the training pods) at ``pvc_mount_path``; pass
    #: ``storage_root=<mount path>/...`` at run time to keep data and models there.
    pvc_claim: str = ""
    pvc_mount_path: str = "/data"
    #: Secret with object-store credentials (KFP's default MinIO secret has keys
    #: ``accesskey``/``secretkey``), exposed as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    storage_secret: str = "mlpipeline-minio-artifact"
    #: S3 endpoint for minio:// and s3:// URIs (a default KFP install's MinIO service).
    s3_endpoint: str = "http://minio-service.kubeflow:9000"
    #: Node selector and tolerations of the GPU steps (evaluation) and the training pods.
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    #: GPU of the evaluation step: resource type, count (0 = CPU) and optional product label.
    eval_gpu_resource: str = "nvidia.com/gpu"
    eval_gpus: int = 1
    eval_gpu_product: str = ""
    #: Timeouts (activeDeadlineSeconds) and retries.
    data_timeout_s: int = 12 * 3600
    eval_timeout_s: int = 6 * 3600
    launcher_timeout_s: int = 7 * 24 * 3600
    data_retries: int = 3
    #: Repository and tag of every step's image and of the training pods' default image
    #: (``sam2kf compile --image-repo/--image-tag``, ``$SAM2KF_IMAGE_REPO``/``$SAM2KF_IMAGE_TAG``).
    images: ImageSettings = field(default_factory=ImageSettings)
    #: Most data partitions (extract + shard pods) running at the same time (0 = no limit).
    data_parallelism: int = 8
    #: The training pods' own launch settings (namespace, image, service account, CPU, memory,
    #: ...; see :mod:`sam2_core.launch.spec`). Its PVC, secrets, node selector and tolerations,
    #: when empty, are the ones above; run-time parameters fill in the rest.
    train: LaunchSpec = field(default_factory=LaunchSpec)


def launch_parameter(s: ClusterSettings, **run_time: Any) -> dict[str, Any]:
    """The train step's launch spec as one dict: compile-time settings + run-time parameters.

    Only settings that differ from the spec's defaults are written (the rest are documented
    once, in :mod:`sam2_core.launch.spec`); run-time values are KFP pipeline channels, which
    KFP substitutes inside the dict when the step starts.
    """
    t = s.train
    # The training pods follow the image setting unless --train-image names another image.
    image = s.images.retarget(t.image) if t.image else ""
    if not image and not s.images.is_default:
        image = s.images.ref("train")
    spec = dataclasses.replace(
        t,
        image=image,
        pvc_claim=t.pvc_claim or s.pvc_claim,
        pvc_mount_path=t.pvc_mount_path if t.pvc_claim else s.pvc_mount_path,
        secret_env=t.secret_env or storage_secret_env(s.storage_secret),
        node_selector=t.node_selector or dict(s.node_selector),
        tolerations=t.tolerations or list(s.tolerations),
    )
    fixed = spec.to_dict()
    unknown = sorted(set(run_time) - set(fixed))
    if unknown:
        raise ValueError(f"not launch spec fields: {unknown}")
    default = LaunchSpec().to_dict()
    return {**{k: v for k, v in fixed.items() if v != default[k]}, **run_time}


def _storage(task: dsl.PipelineTask, s: ClusterSettings) -> None:
    if s.pvc_claim:
        kubernetes.mount_pvc(task, pvc_name=s.pvc_claim, mount_path=s.pvc_mount_path)
    if s.storage_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=s.storage_secret,
            secret_key_to_env={
                "accesskey": "AWS_ACCESS_KEY_ID",
                "secretkey": "AWS_SECRET_ACCESS_KEY",
            },
        )
    if s.s3_endpoint:
        task.set_env_variable("AWS_ENDPOINT_URL", s.s3_endpoint)
        task.set_env_variable("MINIO_ENDPOINT", s.s3_endpoint)


def _placement(task: dsl.PipelineTask, s: ClusterSettings) -> None:
    for key, value in s.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in s.tolerations:
        kubernetes.add_toleration(
            task,
            key=tol.get("key"),
            operator=tol.get("operator"),
            value=tol.get("value"),
            effect=tol.get("effect"),
            toleration_seconds=tol.get("tolerationSeconds"),
        )


def _gpu(task: dsl.PipelineTask, s: ClusterSettings) -> None:
    if s.eval_gpus > 0:
        task.set_accelerator_type(s.eval_gpu_resource)
        task.set_accelerator_limit(s.eval_gpus)
        if s.eval_gpu_product:
            kubernetes.add_node_selector(
                task, label_key="nvidia.com/gpu.product", label_value=s.eval_gpu_product
            )
        _placement(task, s)


def _image(task: dsl.PipelineTask, images: ImageSettings) -> None:
    # A component's base image is fixed when it is defined; the task holds its own copy of the
    # container spec, which is what the compiler writes into the executor.
    if task.container_spec is not None:
        task.container_spec.image = images.retarget(task.container_spec.image)


def build_pipeline(settings: ClusterSettings | None = None) -> Any:
    """Return the pipeline function for ``settings`` (``finetune_pipeline`` uses the defaults)."""
    s = settings or ClusterSettings()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="SAM 2.1 fine-tuning: extract -> shard -> train -> evaluate vs champion -> promote",
    )
    def sam2_finetune(
        raw_uri: str,
        registry_uri: str,
        dataset_name: str = "sav",
        dataset_version: str = "auto",
        model_name: str = "sam2.1_hiera_b+",
        init_checkpoint: str = "champion",
        experiment: str = RUN_FORM_LAUNCH["experiment"],
        overrides: str = "",
        num_nodes: int = RUN_FORM_LAUNCH["num_nodes"],
        nproc_per_node: int = RUN_FORM_LAUNCH["nproc_per_node"],
        gpus_per_process: int = RUN_FORM_LAUNCH["gpus_per_process"],
        max_steps: int = 0,
        train_timeout_hours: float = LaunchSpec.timeout_hours,
        min_jf_gain: float = 0.5,
        launcher_backend: str = LaunchSpec.engine,
        storage_root: str = "",
        every: int = 4,
        val_fraction: float = 0.1,
        shard_size_mb: int = 256,
        eval_max_videos: int = 0,
        data_partitions: int = 1,
    ) -> None:
        """SAM 2.1 fine-tuning on new videos, promoted only when it beats the champion.

        Args:
            raw_uri: raw SA-V style videos (gs://, s3://, minio:// or a PVC path).
            registry_uri: model registry (champion, history, seen videos).
            dataset_name: dataset name; videos of its earlier versions are skipped.
            dataset_version: version to write; ``auto`` = one per run.
            model_name: model configuration (tiny, sam2.1_hiera_t/s/b+/l).
            init_checkpoint: initial weights: ``champion``, a URL, or "" for none.
            experiment: training recipe (``sam2kf train experiment=...``).
            overrides: further Hydra overrides for ``sam2kf train`` (space separated).
            num_nodes: training pods (nodes).
            nproc_per_node: training processes per node.
            gpus_per_process: GPUs per training process (0 = CPU).
            max_steps: training steps (0 = the experiment's).
            train_timeout_hours: deadline of the training job (0 = none).
            min_jf_gain: J&F points the challenger must gain to be promoted.
            launcher_backend: training engine: auto (Trainer v2 TrainJob if the cluster
                serves it, else PyTorchJob), trainjob, pytorchjob or local.
            storage_root: keep data and models under this root instead of the artifact store.
            every: keep every Nth video frame.
            val_fraction: share of videos held out for evaluation.
            shard_size_mb: target Parquet shard size.
            eval_max_videos: evaluate at most this many videos (0 = all).
            data_partitions: extract and shard as this many partitions of the videos, each
                its own pair of steps (pods); the commit step merges them.
        """
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        plan = plan_partitions(num_partitions=data_partitions).set_display_name("plan partitions")
        with dsl.ParallelFor(
            plan.output, parallelism=s.data_parallelism, name="data-partitions"
        ) as partition:
            extract = extract_frames(
                raw_uri=raw_uri,
                dataset_name=dataset_name,
                dataset_version=dataset_version,
                registry_uri=registry_uri,
                run_id=run_id,
                every=every,
                storage_root=storage_root,
                partition=partition,
                num_partitions=data_partitions,
            ).set_display_name("extract frames")
            # The seen-video set lives in the registry, which the cache key cannot see.
            extract.set_caching_options(False)
            part = shard_dataset(
                frames=extract.outputs["frames"],
                partition=partition,
                num_partitions=data_partitions,
                shard_size_mb=shard_size_mb,
                val_fraction=val_fraction,
                storage_root=storage_root,
            ).set_display_name("shard to parquet")
        commit = commit_shards(
            partitions=dsl.Collected(part.outputs["shards"]),
            num_partitions=data_partitions,
            registry_uri=registry_uri,
            raw_uri=raw_uri,
            storage_root=storage_root,
        ).set_display_name("commit dataset")
        # It writes the registry's seen-video set, which the cache key cannot see.
        commit.set_caching_options(False)
        with dsl.If(commit.outputs["Output"] > 0, name="new-videos"):
            launch = launch_parameter(
                s,
                engine=launcher_backend,
                num_nodes=num_nodes,
                nproc_per_node=nproc_per_node,
                gpus_per_process=gpus_per_process,
                timeout_hours=train_timeout_hours,
                experiment=experiment,
                overrides=overrides,
            )
            train = train_model(
                shards=commit.outputs["shards"],
                run_id=run_id,
                launch=launch,
                model_name=model_name,
                init_checkpoint=init_checkpoint,
                registry_uri=registry_uri,
                max_steps=max_steps,
                storage_root=storage_root,
            ).set_display_name("train (launcher)")
            # A cache hit would skip training entirely; the job itself is idempotent per run.
            train.set_caching_options(False)
            challenger = evaluate_challenger(
                shards=commit.outputs["shards"],
                model=train.outputs["model"],
                max_videos=eval_max_videos,
            ).set_display_name("evaluate challenger")
            champion = evaluate_champion(
                shards=commit.outputs["shards"],
                registry_uri=registry_uri,
                model_name=model_name,
                max_videos=eval_max_videos,
            ).set_display_name("evaluate champion")
            champion.set_caching_options(False)  # the champion changes behind the same inputs
            promote = promote_model(
                registry_uri=registry_uri,
                model=train.outputs["model"],
                challenger_jf=challenger.outputs["Output"],
                champion_jf=champion.outputs["Output"],
                min_jf_gain=min_jf_gain,
                shards=commit.outputs["shards"],
                run_id=run_id,
            ).set_display_name("promote if better")
            promote.set_caching_options(False)

        for task in (extract, part, commit):
            task.set_retry(s.data_retries, backoff_duration="60s", backoff_factor=2.0)
            kubernetes.set_timeout(task, s.data_timeout_s)
        kubernetes.set_timeout(plan, 600)
        for task in (challenger, champion):
            _gpu(task, s)
            kubernetes.set_timeout(task, s.eval_timeout_s)
        kubernetes.set_timeout(train, s.launcher_timeout_s)
        kubernetes.set_timeout(promote, 3600)
        for task in (plan, extract, part, commit, train, challenger, champion, promote):
            _storage(task, s)
            _image(task, s.images)

    return sam2_finetune


finetune_pipeline = build_pipeline()
