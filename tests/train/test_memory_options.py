"""Memory levers of training change memory only: block-wise activation checkpointing of the
image encoder and a frozen image encoder (run under ``no_grad``) give the same loss and the same
gradients as the plain step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sam2_core.model import build_model
from sam2_core.train.losses import LossConfig, MultiStepMultiMasksAndIous
from sam2_core.train.model_train import SAM2Train
from sam2_core.train.prompts import PromptConfig, PromptSimulator
from sam2_core.train.synthetic import SyntheticLoader

Step = tuple[float, dict[str, torch.Tensor]]


def _step(configure: Callable[[torch.nn.Module], None]) -> Step:
    """One training forward + backward of the tiny model on a fixed synthetic clip."""
    torch.manual_seed(0)
    model = build_model("tiny")
    configure(model)
    prompts = PromptSimulator(PromptConfig(), click_seed=1)
    module = SAM2Train(model, prompts).train()
    batch = next(iter(SyntheticLoader(resolution=128, num_frames=3, max_num_objects=2, seed=3)))
    torch.manual_seed(5)  # drop path and the prompt draws
    outs = module(batch)
    losses = MultiStepMultiMasksAndIous.from_config(LossConfig())(outs, batch.masks)
    loss = losses["core_loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


@pytest.fixture(scope="module")
def plain() -> Step:
    return _step(lambda m: None)


def test_block_checkpointing_changes_nothing_but_memory(plain: Step) -> None:
    def blocks(m: torch.nn.Module) -> None:
        trunk = m.get_submodule("image_encoder.trunk")
        trunk.checkpoint_blocks = True

    loss, grads = _step(blocks)
    assert loss == plain[0]
    assert grads.keys() == plain[1].keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[1][name], rtol=0, atol=0, msg=name)


def test_frozen_image_encoder_runs_without_a_graph(plain: Step) -> None:
    def freeze(m: torch.nn.Module) -> None:
        m.get_submodule("image_encoder").requires_grad_(False)

    loss, grads = _step(freeze)
    assert loss == pytest.approx(plain[0], rel=1e-6)
    assert not any(n.startswith("image_encoder.") for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[1][name], rtol=1e-5, atol=1e-7, msg=name)
