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
    """Append the decision to the registry history; move the champion pointer if promoted."""
    from sam2_core.steps import promote_step

    return promote_step(
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
