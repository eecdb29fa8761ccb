"""KFP component: the training launcher (a PyTorchJob on the cluster, or local torchrun)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="train"))
def train_model(
    shards: Input[Dataset],
    run_id: str,
    launch: dict,
    model: Output[Model],
    model_name: str = "tiny",
    init_checkpoint: str = "",
    registry_uri: str = "",
    max_steps: int = 0,
    storage_root: str = "",
) -> str:
    """Train (create or attach to the run's job, stream its log, wait); returns the model URL.

    Args:
        shards: the Parquet shards to train on.
        run_id: the pipeline run's id; the job's name derives from it, so a retried step
            attaches to the job it created.
        launch: the launch spec (``sam2_core.launch.spec.LaunchSpec`` as a dict): engine,
            nodes, processes and GPUs, pod size, image, namespace, PVC, secrets, placement,
            timeout, experiment and overrides; unset fields keep their documented defaults.
        model: the training output folder: checkpoints, TensorBoard logs, ``model_final.pt``.
        model_name: model configuration (``tiny``, ``sam2.1_hiera_t`` ... ``sam2.1_hiera_l``).
        init_checkpoint: initial weights: a URL, ``champion`` (the registry's), "" = none.
        registry_uri: model registry (for ``init_checkpoint=champion``).
        max_steps: training steps (0 = the experiment's).
        storage_root: write under this root instead of the artifact store ("" = artifact store).
    """
    from sam2_core.workflow import launch_training

    return launch_training(
        shards=shards,
        model=model,
        run_id=run_id,
        launch=launch,
        model_name=model_name,
        init_checkpoint=init_checkpoint,
        registry_uri=registry_uri,
        max_steps=max_steps,
        storage_root=storage_root,
    )
