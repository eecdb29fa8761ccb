"""KFP component: the training launcher (a PyTorchJob on the cluster, or local torchrun)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="train"))
def train_model(
    shards: Input[Dataset],
    run_id: str,
    model: Output[Model],
    backend: str = "pytorchjob",
    model_name: str = "tiny",
    init_checkpoint: str = "",
    registry_uri: str = "",
    experiment: str = "",
    overrides: str = "",
    max_steps: int = 0,
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    gpus_per_process: int = 0,
    timeout_hours: float = 72.0,
    namespace: str = "",
    image: str = "",
    service_account: str = "sam2kf-trainer",
    cpu: str = "4",
    memory: str = "16Gi",
    pvc_claim: str = "",
    pvc_mount_path: str = "/data",
    storage_secret: str = "",
    node_selector: dict = {},  # noqa: B006 - KFP needs a literal default
    tolerations: list = [],  # noqa: B006
    storage_root: str = "",
) -> str:
    """Train (create or attach to the run's job, stream its log, wait); returns the model URL."""
    from sam2_core.steps import train_step

    return train_step(
        shards=shards,
        model=model,
        run_id=run_id,
        backend=backend,
        model_name=model_name,
        init_checkpoint=init_checkpoint,
        registry_uri=registry_uri,
        experiment=experiment,
        overrides=overrides,
        max_steps=max_steps,
        num_nodes=num_nodes,
        nproc_per_node=nproc_per_node,
        gpus_per_process=gpus_per_process,
        timeout_hours=timeout_hours,
        namespace=namespace,
        image=image,
        service_account=service_account,
        cpu=cpu,
        memory=memory,
        pvc_claim=pvc_claim,
        pvc_mount_path=pvc_mount_path,
        storage_secret=storage_secret,
        node_selector=node_selector,
        tolerations=tolerations,
        storage_root=storage_root,
    )
