"""KFP component: the list of data partitions the extract and shard steps fan out over."""

from kfp import dsl

from sam2_core import image_ref


@dsl.component(base_image=image_ref(flavour="data"))
def plan_partitions(num_partitions: int) -> list[int]:
    """``[0, ..., num_partitions - 1]``, the items of the ``dsl.ParallelFor``.

    Args:
        num_partitions: how many partitions the videos are split into (>= 1).
    """
    from sam2_core.workflow import partition_numbers

    return partition_numbers(num_partitions=num_partitions)
