"""KFP component: evaluate the registry's current champion on the same split as the challenger."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="train"))
def evaluate_champion(
    shards: Input[Dataset],
    registry_uri: str,
    results: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    model_name: str = "tiny",
    split: str = "val",
    device: str = "auto",
    max_videos: int = 0,
) -> float:
    """J&F of the champion on this split, or -1.0 when there is no champion yet."""
    from sam2_core.steps import evaluate_step

    return evaluate_step(
        shards=shards,
        model_uri="champion",
        registry_uri=registry_uri,
        results=results,
        metrics=metrics,
        report=report,
        model_name=model_name,
        split=split,
        device=device,
        max_videos=max_videos,
    )
