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
    """Semi-supervised VOS inference + J&F of the trained model; returns J&F (0..100).

    Args:
        shards: the Parquet shards to evaluate on.
        model: the training output of the train step (the challenger).
        results: the challenger's predictions and per-video scores (output).
        metrics: its J&F, J and F (output).
        report: its HTML report (output).
        split: the split of the shards to evaluate (``val``).
        device: ``auto``, ``cpu`` or ``cuda``.
        max_videos: evaluate at most this many videos (0 = all).
    """
    from sam2_core.workflow import evaluate_on_shards

    return evaluate_on_shards(
        shards=shards,
        model=model,
        results=results,
        metrics=metrics,
        report=report,
        device=device,
        split=split,
        max_videos=max_videos,
    )
