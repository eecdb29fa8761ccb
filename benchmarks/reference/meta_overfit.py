"""Meta's side of ``benchmarks/overfit.py``: sam2 1.1.0's ``SAM2Train`` trained on saved clips.

    <ref-venv>/bin/python benchmarks/reference/meta_overfit.py WORKDIR

Reads ``WORKDIR/inputs.pt`` (``pool`` of clips, ``state_dict``, ``seed``, ``steps``,
``eval_every``, ``threads``, ``max_train_s``, ``res``, ``lr`` {base_lr, vision_lr},
``num_correction_pt_per_frame``). The config is the MOSE fine-tune one with the project's tiny
sizes (``meta_trajectory.TINY``), ``res`` px and the given learning rates (its cosine schedulers
end at a tenth of them, as ours do); drop path 0 (as our tiny), dropout as configured (0.1).
The loop is ``Trainer.train_epoch``'s for one epoch of ``steps`` iterations: zero_grad, forward,
loss, backward, ``step_schedulers(i / steps)``, ``GradientClipper``, ``optimizer.step``.
Writes ``meta.json`` (core loss per step, training seconds) and ``meta_stepNNNNN.pt`` snapshots.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch
from meta_common import MOSE, SIZES, datapoint  # this folder (the script's sys.path[0])


def compose(res: int, lr: dict[str, float], num_pt: int) -> Any:
    import sam2  # noqa: F401  (registers its config module with Hydra)
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("divide"):
        from training.utils.train_utils import register_omegaconf_resolvers

        register_omegaconf_resolvers()
    m = "trainer.model."
    return hydra_compose(
        config_name=MOSE,
        overrides=[
            f"scratch.resolution={res}",
            f"scratch.base_lr={lr['base_lr']!r}",
            f"scratch.vision_lr={lr['vision_lr']!r}",
            *SIZES["tiny"],
            f"++{m}image_encoder.trunk.drop_path_rate=0.0",
            f"{m}num_correction_pt_per_frame={num_pt}",
        ],
    )


def main() -> int:
    work = sys.argv[1]
    inp = torch.load(os.path.join(work, "inputs.pt"), weights_only=True)
    torch.set_num_threads(int(inp["threads"]))
    torch.manual_seed(int(inp["seed"]))  # dropout and click coordinates
    from hydra.utils import instantiate
    from training.optimizer import construct_optimizer

    cfg = compose(int(inp["res"]), inp["lr"], int(inp["num_correction_pt_per_frame"]))
    model = instantiate(cfg.trainer.model, _recursive_=True).train()
    model.load_state_dict(inp["state_dict"], strict=True)
    loss_fn = instantiate(cfg.trainer.loss.all)
    o = cfg.trainer.optim
    optim = construct_optimizer(model, o.optimizer, o.options, o.param_group_modifiers)
    clipper = instantiate(o.gradient_clip)

    steps, every, pool = int(inp["steps"]), int(inp["eval_every"]), inp["pool"]
    losses: list[float] = []
    t_train = 0.0
    for i in range(steps):
        t0 = time.perf_counter()
        batch = datapoint(pool[i % len(pool)], dict_key="all")
        optim.zero_grad(set_to_none=True)
        out = loss_fn(model(batch), batch.masks)
        core = out["core_loss"]
        if core.requires_grad:
            core.backward()
        optim.step_schedulers(i / steps, step=i)
        clipper(model=model)
        optim.optimizer.step()
        t_train += time.perf_counter() - t0
        losses.append(float(core.detach()))
        over = t_train > float(inp["max_train_s"])  # time budget spent: stop (schedule unchanged)
        if (i + 1) % every == 0 or i + 1 == steps or over:
            torch.save(model.state_dict(), os.path.join(work, f"meta_step{i + 1:05d}.pt"))
        if over:
            break
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump({"losses": losses, "train_s": t_train}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
