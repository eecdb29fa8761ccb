"""KFP component: one partition's frame folders -> Parquet shards + its partition manifest."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="data"))
def shard_dataset(
    frames: Input[Dataset],
    shards: Output[Dataset],
    partition: int = 0,
    num_partitions: int = 1,
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    storage_root: str = "",
) -> int:
    """Write one partition's Parquet shards and partition manifest; returns its video count.

    Args:
        frames: the frame folders of the partition's extract step.
        shards: the partition's shard files and ``_partitions/`` manifest (output; the commit
            step merges the partitions into one dataset version).
        partition: which partition of the videos this step writes (0-based).
        num_partitions: how many partitions the videos are split into.
        shard_size_mb: a new shard file starts past this size.
        val_fraction: share of videos held out as the ``val`` split.
        seed: salt of the split hash.
        storage_root: write under this root instead of the artifact store ("" = artifact store).
    """
    from sam2_core.workflow import shard_partition

    return shard_partition(
        frames=frames,
        shards=shards,
        partition=partition,
        num_partitions=num_partitions,
        shard_size_mb=shard_size_mb,
        val_fraction=val_fraction,
        seed=seed,
        storage_root=storage_root,
    )
