"""KFP component: the shard partitions -> one dataset version, recorded in the registry."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="data"))
def commit_shards(
    partitions: Input[list[Dataset]],
    num_partitions: int,
    registry_uri: str,
    raw_uri: str,
    shards: Output[Dataset],
    storage_root: str = "",
) -> int:
    """Merge every partition's shards into one dataset version; returns its video count.

    Args:
        partitions: the shard outputs of every partition (``dsl.Collected`` of the fan-out).
        num_partitions: how many partitions there are (all must be complete).
        registry_uri: model registry that records the dataset version ("" = none).
        raw_uri: where the videos came from (recorded with the version).
        shards: the dataset version: Parquet shards, ``index.parquet``, ``manifest.json``
            (output); nothing is written when no partition has a new video (returns 0).
        storage_root: write under this root instead of the artifact store ("" = artifact store).
    """
    from sam2_core.workflow import commit_dataset

    return commit_dataset(
        partitions=partitions,
        shards=shards,
        num_partitions=num_partitions,
        registry_uri=registry_uri,
        raw_uri=raw_uri,
        storage_root=storage_root,
    )
