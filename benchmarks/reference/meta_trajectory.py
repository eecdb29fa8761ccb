"""Meta's side of ``benchmarks/trajectory.py``: N training steps of the official trainer's loop
(sam2 1.1.0: ``training.model.sam2.SAM2Train``, ``MultiStepMultiMasksAndIous``, the optimizer of
``training.optimizer.construct_optimizer`` with the MOSE config's param-group modifier and
schedulers, ``GradientClipper``) on saved batches, recording everything the comparison needs.

    <ref-venv>/bin/python benchmarks/reference/meta_trajectory.py WORKDIR

Reads ``WORKDIR/inputs.pt`` (written by ``benchmarks/trajectory.py``): ``batches`` (plain tensors),
``state_dict`` (the shared initial weights), ``model`` (``tiny`` or ``sam2.1_hiera_t``), ``steps``,
``lr_scale``, ``threads``. Writes ``WORKDIR/meta.pt``: per step the prompt decisions, every click
(initial and correction, in call order, so that the other trainer can replay them), the loss terms,
the lr and weight decay of every parameter group and the gradient norm before clipping; the group
membership (parameter names); the final weights.

The loop is the one of ``training.trainer.Trainer.train_epoch`` (one epoch of ``steps``
iterations, ``max_epochs`` 1): zero_grad, forward, loss, backward, ``step_schedulers(where =
i / steps)``, clip, ``optimizer.step``. Dropout and drop path are set to 0 (the only randomness
left, click coordinates, is recorded). fp32 on CPU, as the trainer with ``amp.enabled=false``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from meta_common import MOSE, SIZES, M, datapoint  # this folder (the script's sys.path[0])

# Deterministic training: no drop path, no dropout (everything else as in the MOSE recipe).
NO_DROPOUT = [
    f"++{M}image_encoder.trunk.drop_path_rate=0.0",
    f"{M}memory_attention.layer.dropout=0.0",
    f"{M}memory_attention.layer.self_attention.dropout=0.0",
    f"{M}memory_attention.layer.cross_attention.dropout=0.0",
]


def compose_mose(model: str, res: int, lr_scale: float) -> Any:
    """The MOSE fine-tune config with ``model``'s sizes, ``res`` px and the lrs scaled."""
    import sam2  # noqa: F401  (registers its config module with Hydra)
    from hydra import compose
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("divide"):
        from training.utils.train_utils import register_omegaconf_resolvers

        register_omegaconf_resolvers()
    return compose(
        config_name=MOSE,
        overrides=[
            f"scratch.resolution={res}",
            f"scratch.base_lr={5.0e-6 * lr_scale!r}",
            f"scratch.vision_lr={3.0e-6 * lr_scale!r}",
            *SIZES[model],
            *NO_DROPOUT,
        ],
    )


class Recorder:
    """Wraps the click samplers imported by ``training.model.sam2`` to log their results."""

    def __init__(self) -> None:
        self.init: list[dict[str, Any]] = []
        self.corr: list[dict[str, Any]] = []
        self.in_prepare = False
        self.decisions: dict[str, Any] = {}

    def install(self) -> None:
        import training.model.sam2 as ms

        next_point, box_points, prepare = (
            ms.get_next_point,
            ms.sample_box_points,
            ms.SAM2Train.prepare_prompt_inputs,
        )
        rec = self

        def get_next_point(gt_masks, pred_masks, method):  # type: ignore[no-untyped-def]
            pts, labels = next_point(gt_masks=gt_masks, pred_masks=pred_masks, method=method)
            item = {"point_coords": pts.clone(), "point_labels": labels.clone()}
            if rec.in_prepare:
                rec.init.append({**item, "kind": "point"})
            else:
                rec.corr.append({**item, "from_gt": pred_masks is None})
            return pts, labels

        def sample_box_points(masks, *a, **k):  # type: ignore[no-untyped-def]
            pts, labels = box_points(masks, *a, **k)
            rec.init.append(
                {"point_coords": pts.clone(), "point_labels": labels.clone(), "kind": "box"}
            )
            return pts, labels

        def prepare_prompt_inputs(self, backbone_out, input, start_frame_idx=0):  # type: ignore[no-untyped-def]
            rec.in_prepare = True
            try:
                out = prepare(self, backbone_out, input, start_frame_idx)
            finally:
                rec.in_prepare = False
            rec.decisions = {
                "use_pt_input": bool(out["use_pt_input"]),
                "init_cond_frames": [int(t) for t in out["init_cond_frames"]],
                "frames_to_add_correction_pt": [int(t) for t in out["frames_to_add_correction_pt"]],
            }
            return out

        ms.get_next_point = get_next_point
        ms.sample_box_points = sample_box_points
        ms.SAM2Train.prepare_prompt_inputs = prepare_prompt_inputs

    def take(self) -> dict[str, Any]:
        out = {"decisions": self.decisions, "init_clicks": self.init, "corr_clicks": self.corr}
        self.init, self.corr = [], []
        return out


def main() -> int:
    work = sys.argv[1]
    inp = torch.load(os.path.join(work, "inputs.pt"), weights_only=True)
    if inp["threads"] > 0:
        torch.set_num_threads(inp["threads"])
    from hydra.utils import instantiate
    from training.optimizer import construct_optimizer

    rec = Recorder()
    rec.install()
    res = int(inp["batches"][0]["img_batch"].shape[-1])
    cfg = compose_mose(inp["model"], res, float(inp["lr_scale"]))
    model = instantiate(cfg.trainer.model, _recursive_=True).train()
    model.load_state_dict(inp["state_dict"], strict=True)
    loss_fn = instantiate(cfg.trainer.loss.all)
    o = cfg.trainer.optim
    optim = construct_optimizer(model, o.optimizer, o.options, o.param_group_modifiers)
    clipper = instantiate(o.gradient_clip)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in optim.optimizer.param_groups]

    torch.manual_seed(123)  # click coordinates (global torch RNG); recorded for the replay
    steps = int(inp["steps"])
    records = []
    for i, b in enumerate(inp["batches"][:steps]):
        batch = datapoint(b, dict_key="all")
        optim.zero_grad(set_to_none=True)
        outs = model(batch)
        losses = loss_fn(outs, batch.masks)
        core = losses["core_loss"]
        if core.requires_grad:  # all frames mask-prompted: no gradient (see sam2_training.md)
            core.backward()
        where = i / steps
        optim.step_schedulers(where, step=i)
        grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
        grad_norm = float(torch.stack(grads).norm()) if grads else 0.0
        clipper(model=model)
        optim.optimizer.step()
        records.append(
            {
                **rec.take(),
                "where": where,
                "losses": {k: float(v) for k, v in losses.items()},
                "lr": [float(g["lr"]) for g in optim.optimizer.param_groups],
                "wd": [float(g["weight_decay"]) for g in optim.optimizer.param_groups],
                "grad_norm": grad_norm,
            }
        )
    torch.save(
        {
            "steps": records,
            "groups": groups,
            "final_state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": type(optim.optimizer).__name__,
            "torch": str(torch.__version__),
        },
        os.path.join(work, "meta.pt"),
    )
    print(f"meta: {steps} steps, {len(groups)} parameter groups")
    return 0


if __name__ == "__main__":
    sys.exit(main())
