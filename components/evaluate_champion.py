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
    """J&F of the registry's champion on this split, or -1.0 when there is no champion yet.

    Args:
        shards: the Parquet shards the challenger is evaluated on.
        registry_uri: the model registry whose champion is evaluated.
        results: the champion's predictions and per-video scores (output).
        metrics: the champion's J&F, J and F; -1 without a champion (output).
        report: the champion's HTML report (output).
        model_name: configuration of champions recorded without one.
        split: the same split as the challenger's.
        device: ``auto``, ``cpu`` or ``cuda``.
        max_videos: evaluate at most this many videos (0 = all).
    """
    from sam2_core.workflow import CHAMPION, evaluate_on_shards

    return evaluate_on_shards(
        shards=shards,
        model_uri=CHAMPION,
        registry_uri=registry_uri,
        model_name=model_name,
        results=results,
        metrics=metrics,
        report=report,
        split=split,
        device=device,
        max_videos=max_videos,
    )
