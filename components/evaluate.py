"""KFP component: evaluate the freshly trained challenger on the dataset's validation split."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="train"))
def evaluate_challenger(
    shards: Input[Dataset],
    model: Input[Model],
    results: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    split: str = "val",
    device: str = "auto",
    max_videos: int = 0,
) -> float:
    """Semi-supervised VOS inference + J&F; returns J&F (0..100)."""
    from sam2_core.steps import evaluate_step

    return evaluate_step(
        shards=shards,
        model=model,
        results=results,
        metrics=metrics,
        report=report,
        split=split,
        device=device,
        max_videos=max_videos,
    )
