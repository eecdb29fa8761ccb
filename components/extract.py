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
) -> int:
    """Decode every ``every``-th frame of each new video; returns how many videos were new.

    ``dataset_version="auto"`` = ``run-<run_id>``; the version rides on ``frames.metadata``.
    """
    from sam2_core.steps import extract_step

    return extract_step(
        raw_uri=raw_uri,
        frames=frames,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        registry_uri=registry_uri,
        run_id=run_id,
        every=every,
        workers=workers,
        storage_root=storage_root,
    )
