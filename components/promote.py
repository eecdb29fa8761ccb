"""KFP component: champion/challenger gate; promotes the challenger when it wins by the margin."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="data"))
def promote_model(
    registry_uri: str,
    model: Input[Model],
    challenger_jf: float,
    champion_jf: float,
    min_jf_gain: float,
    shards: Input[Dataset],
    run_id: str,
    decision: Output[Artifact],
    split: str = "val",
) -> bool:
    """Append the decision to the registry history; move the champion pointer if promoted.

    Args:
        registry_uri: the model registry.
        model: the trained challenger.
        challenger_jf: the challenger's J&F.
        champion_jf: the champion's J&F on the same split (-1 = no champion yet).
        min_jf_gain: J&F points the challenger must gain over the champion.
        shards: the dataset version both were evaluated on.
        run_id: the pipeline run's id (recorded with the model).
        decision: the decision and the challenger's record as JSON (output).
        split: the split both were evaluated on.
    """
    from sam2_core.workflow import promote_if_better

    return promote_if_better(
        registry_uri=registry_uri,
        model=model,
        challenger_jf=challenger_jf,
        champion_jf=champion_jf,
        margin=min_jf_gain,
        shards=shards,
        run_id=run_id,
        decision=decision,
        split=split,
    )
