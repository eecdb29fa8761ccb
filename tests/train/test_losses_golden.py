"""Losses against the official implementation's outputs (../shared/golden/losses)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam2_core.train.losses import (
    MultiStepMultiMasksAndIous,
    dice_loss,
    iou_loss,
    sigmoid_focal_loss,
)

RTOL = 1e-5


@pytest.fixture(scope="module")
def g(golden: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(golden / "losses" / "losses.safetensors"))


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.float(), b.float(), rtol=RTOL, atol=1e-7)


def test_elementary(g: dict[str, torch.Tensor]) -> None:
    x4, y4, x2, y2 = g["dice/x4"], g["dice/y4"].float(), g["dice/x2"], g["dice/y2"].float()
    ious = g["iou/pred_ious"]
    close(dice_loss(x4, y4, 3.0, loss_on_multimask=True), g["dice/out_multimask"])
    close(dice_loss(x2, y2, 4.0), g["dice/out_single"])
    close(
        sigmoid_focal_loss(x4, y4, 3.0, alpha=0.25, gamma=2, loss_on_multimask=True),
        g["focal/out_multimask"],
    )
    close(sigmoid_focal_loss(x2, y2, 4.0), g["focal/out_single"])
    close(sigmoid_focal_loss(x2, y2, 4.0, alpha=-1.0, gamma=0.0), g["focal/out_single_a-1_g0"])
    close(sigmoid_focal_loss(x2, y2, 2.5, alpha=0.6, gamma=1.5), g["focal/out_single_a0.6_g1.5"])
    close(
        sigmoid_focal_loss(g["focal/obj_x"], g["focal/obj_y"].float(), 5.0, alpha=-1.0, gamma=0.0),
        g["focal/obj_out_a-1_g0"],
    )
    for mm, name in ((True, "multimask"), (False, "single")):
        for l1, kind in ((True, "l1"), (False, "mse")):
            out = iou_loss(x4, y4, ious, 3.0, loss_on_multimask=mm, use_l1_loss=l1)
            close(out, g[f"iou/out_{name}_{kind}"])


def _mstep_outputs(g: dict[str, torch.Tensor]) -> list[dict[str, list[torch.Tensor]]]:
    outs = []
    for f in range(3):
        steps = sorted(
            {int(k.split("/")[2][4:]) for k in g if k.startswith(f"mstep/frame{f}/step")}
        )
        pre = [f"mstep/frame{f}/step{s}/" for s in steps]
        outs.append(
            {
                "multistep_pred_multimasks_high_res": [
                    g[p + "pred_multimasks_high_res"] for p in pre
                ],
                "multistep_pred_ious": [g[p + "pred_ious"] for p in pre],
                "multistep_object_score_logits": [g[p + "object_score_logits"] for p in pre],
            }
        )
    return outs


@pytest.mark.parametrize("case", ["mose", "default"])
def test_multistep(g: dict[str, torch.Tensor], case: str) -> None:
    if case == "mose":
        loss = MultiStepMultiMasksAndIous(
            {"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1},
            supervise_all_iou=True,
            iou_use_l1_loss=True,
            pred_obj_scores=True,
            focal_gamma_obj_score=0.0,
            focal_alpha_obj_score=-1.0,
        )
    else:
        loss = MultiStepMultiMasksAndIous({"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0})
    outs = _mstep_outputs(g)
    targets = g["mstep/targets"]
    total = loss(outs, targets)
    for key in ("loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"):
        close(total[key], g[f"mstep/out_{case}/{key}"])
    for f in range(3):
        per = loss.frame_loss(outs[f], targets[f], 3.0)
        for key in ("loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"):
            close(per[key], g[f"mstep/out_{case}/frame{f}/{key}"])
