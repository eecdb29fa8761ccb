"""KFP component: raw SA-V videos -> JPEG frame folders (only videos no other version has seen)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="data"))
def extract_frames(
    raw_uri: str,
    dataset_name: str,
    dataset_version: str,
    registry_uri: str,
    run_id: str,
    frames: Output[Dataset],
    every: int = 4,
    workers: int = 0,
    storage_root: str = "",
    partition: int = 0,
    num_partitions: int = 1,
) -> int:
    """Decode every ``every``-th frame of each new video of one partition; returns how many
    videos (of the partition) were new.

    Args:
        raw_uri: folder of raw SA-V style videos (``<id>.mp4`` + ``<id>_manual.json``), any
            fsspec URL or PVC path.
        dataset_name: name of the dataset; videos of its other versions count as seen.
        dataset_version: version to write; ``auto`` = ``run-<run_id>``.
        registry_uri: model registry holding the seen-video set ("" = every video is new).
        run_id: the pipeline run's id.
        frames: extracted JPEG frame folders in the SA-V layout (output).
        every: keep every Nth frame of the 24 fps video (4 = SA-V's 6 fps annotations).
        workers: decode processes (0 = in the step's own process).
        storage_root: write under this root instead of the artifact store ("" = artifact store).
        partition: which partition of the videos this step extracts (0-based).
        num_partitions: how many partitions the videos are split into (by a hash of the id).
    """
    from sam2_core.workflow import extract_videos

    return extract_videos(
        raw_uri=raw_uri,
        frames=frames,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        registry_uri=registry_uri,
        run_id=run_id,
        every=every,
        workers=workers,
        storage_root=storage_root,
        partition=partition,
        num_partitions=num_partitions,
    )
