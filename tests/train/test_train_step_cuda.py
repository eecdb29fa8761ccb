"""One training step on a GPU under bf16 autocast (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.gpu
def test_tiny_training_step_cuda_bf16() -> None:
    from sam2_core.model.build import build_model
    from sam2_core.train.losses import LossConfig, MultiStepMultiMasksAndIous
    from sam2_core.train.model_train import SAM2Train
    from sam2_core.train.optim import OptimConfig, ScheduledOptimizer
    from sam2_core.train.prompts import PromptConfig, PromptSimulator
    from sam2_core.train.synthetic import SyntheticLoader

    torch.manual_seed(0)
    model = build_model("tiny", mode="train", device="cuda")
    tm = SAM2Train(model, PromptSimulator(PromptConfig(), click_seed=0)).train()
    opt = ScheduledOptimizer(model, OptimConfig())
    loss_fn = MultiStepMultiMasksAndIous.from_config(LossConfig())
    loader = SyntheticLoader(resolution=256, num_frames=4, max_num_objects=2)
    for batch, _ in zip(loader, range(3)):
        batch = batch.to("cuda")
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(tm(batch), batch.masks)["core_loss"]
        loss.backward()
        assert torch.isfinite(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
