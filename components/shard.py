"""KFP component: frame folders -> Parquet shards (+ index), recorded in the registry."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="data"))
def shard_dataset(
    frames: Input[Dataset],
    registry_uri: str,
    raw_uri: str,
    shards: Output[Dataset],
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    storage_root: str = "",
) -> None:
    """Write the shards and record this version's video ids as seen."""
    from sam2_core.steps import shard_step

    shard_step(
        frames=frames,
        shards=shards,
        registry_uri=registry_uri,
        raw_uri=raw_uri,
        shard_size_mb=shard_size_mb,
        val_fraction=val_fraction,
        seed=seed,
        storage_root=storage_root,
    )
