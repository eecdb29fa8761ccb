"""Optimizer groups and schedules (numbers from the official MOSE recipe, notes §6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam2_core.train.optim import (
    OptimConfig,
    ScheduledOptimizer,
    build_param_groups,
    freeze_parameters,
)


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Linear(d, d)


class _Trunk(nn.Module):
    """Hiera-shaped parameter names: pos_embed, pos_embed_window, patch_embed.proj, blocks.k."""

    def __init__(self, n: int, d: int = 4) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, d, 2, 2))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, d, 2, 2))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 1)
        self.blocks = nn.ModuleList(_Block(d) for _ in range(n))


class _Model(nn.Module):
    def __init__(self, n_blocks: int = 24) -> None:
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.trunk = _Trunk(n_blocks)
        self.image_encoder.neck = nn.Conv2d(4, 4, 1)
        self.memory_attention = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, 4))


def _lr(opt: ScheduledOptimizer, name: str) -> float:
    for info, group in zip(opt.groups, opt.optimizer.param_groups):
        if name in info.param_names:
            return float(group["lr"])
    raise KeyError(name)


def _wd(opt: ScheduledOptimizer, name: str) -> float:
    for info, group in zip(opt.groups, opt.optimizer.param_groups):
        if name in info.param_names:
            return float(group["weight_decay"])
    raise KeyError(name)


def test_layer_decay_numbers_b_plus() -> None:
    model = _Model(24)
    opt = ScheduledOptimizer(model, OptimConfig())
    # notes §6: 55 groups on b+ (24 trunk blocks)
    assert len(opt.groups) == 55
    t = "image_encoder.trunk."
    assert _lr(opt, "memory_attention.0.weight") == pytest.approx(5e-6)
    assert _lr(opt, "no_mem_embed") == pytest.approx(5e-6)
    assert _lr(opt, "image_encoder.neck.weight") == pytest.approx(3e-6)
    assert _lr(opt, t + "pos_embed") == pytest.approx(3e-6)
    assert _lr(opt, t + "pos_embed_window") == pytest.approx(3e-6)
    assert _lr(opt, t + "blocks.23.attn.weight") == pytest.approx(2.7e-6)
    assert _lr(opt, t + "blocks.0.attn.weight") == pytest.approx(2.393e-7, rel=1e-3)
    for k in (0, 5, 17):
        assert _lr(opt, t + f"blocks.{k}.mlp.bias") == pytest.approx(3e-6 * 0.9 ** (24 - k))
    assert _lr(opt, t + "patch_embed.proj.weight") == pytest.approx(2.154e-7, rel=1e-3)
    # weight decay: 0 for biases and nn.LayerNorm params, 0.1 otherwise (incl. pos_embed)
    assert _wd(opt, t + "blocks.3.norm1.weight") == 0.0
    assert _wd(opt, t + "blocks.3.attn.bias") == 0.0
    assert _wd(opt, t + "blocks.3.attn.weight") == pytest.approx(0.1)
    assert _wd(opt, t + "pos_embed") == pytest.approx(0.1)
    assert _wd(opt, "memory_attention.1.weight") == 0.0
    assert _wd(opt, "no_mem_embed") == pytest.approx(0.1)


def test_cosine_schedule_values() -> None:
    model = _Model(2)
    opt = ScheduledOptimizer(model, OptimConfig())
    expected = {0.0: 5e-6, 0.25: 4.341e-6, 0.5: 2.75e-6, 0.75: 1.159e-6, 1.0: 5e-7}
    for where, lr in expected.items():
        opt.set_progress(where)
        assert max(opt.current_lrs().values()) == pytest.approx(lr, rel=1e-3)
        assert _lr(opt, "image_encoder.neck.weight") == pytest.approx(lr * 0.6, rel=1e-3)


def test_every_param_in_one_group_and_freeze() -> None:
    model = _Model(3)
    frozen = freeze_parameters(model, ["image_encoder.*"])
    assert frozen and all(n.startswith("image_encoder.") for n in frozen)
    groups = build_param_groups(model, OptimConfig())
    names = [n for g in groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="matches no parameter"):
        freeze_parameters(model, ["does_not_exist.*"])


def test_overlapping_entries_rejected() -> None:
    from sam2_core.train.optim import ScheduleSpec

    cfg = OptimConfig(
        weight_decay=[
            ScheduleSpec(0.1),
            ScheduleSpec(0.0, param_names=["*bias*"]),
            ScheduleSpec(0.0, param_names=["image_encoder.neck.*"]),
        ]
    )
    with pytest.raises(ValueError, match="several entries"):
        build_param_groups(_Model(2), cfg)


def test_step_changes_params() -> None:
    model = _Model(2)
    opt = ScheduledOptimizer(model, OptimConfig())
    before = model.no_mem_embed.detach().clone()
    model.no_mem_embed.sum().mul(1.0).backward()
    opt.step()
    assert not torch.equal(before, model.no_mem_embed.detach())


def test_module_class_names_cannot_import_arbitrary_code() -> None:
    from sam2_core.train.optim import ScheduleSpec, assign_params

    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    spec = ScheduleSpec(start=0.0, module_cls_names=["os.system"])
    with pytest.raises(ValueError, match="not allowed"):
        assign_params(model, [spec, ScheduleSpec(start=0.1)], "weight_decay")
