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
    """Write the Parquet shards and record this version's video ids as seen.

    Args:
        frames: the frame folders of the extract step.
        registry_uri: model registry that records the dataset version ("" = none).
        raw_uri: where the videos came from (recorded with the version).
        shards: Parquet shards, ``index.parquet`` and ``manifest.json`` (output).
        shard_size_mb: a new shard file starts past this size.
        val_fraction: share of videos held out as the ``val`` split.
        seed: salt of the split hash.
        storage_root: write under this root instead of the artifact store ("" = artifact store).
    """
    from sam2_core.workflow import shard_videos

    shard_videos(
        frames=frames,
        shards=shards,
        registry_uri=registry_uri,
        raw_uri=raw_uri,
        shard_size_mb=shard_size_mb,
        val_fraction=val_fraction,
        seed=seed,
        storage_root=storage_root,
    )
