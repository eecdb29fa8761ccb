"""One SAM2Train forward/backward against the official reference (../shared/golden/tiny/train_step).

Randomness removed as in the reference: drop_path and dropout 0, fixed prompt decisions, and the
reference's clicks injected instead of sampled. Tolerances: loss terms rtol 1e-5 (asked by the
issue), total and per-parameter gradient norms rtol 1e-5 (README section 10 recommends 1e-3;
the tightest that passes here is used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sam2_core.data.loader.collate import BatchedVideo
from sam2_core.train.losses import MultiStepMultiMasksAndIous
from sam2_core.train.model_train import SAM2Train
from sam2_core.train.prompts import PromptConfig, PromptSimulator

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-5
# Parameters whose float32 reference gradient is itself further than GRAD_RTOL from the exact
# one: no_obj_embed_spatial's gradient is a sum over every memory position with heavy
# cancellation. Replaying this step in float64 gives a norm 5e-5 relative away from the
# reference (1.6x the default tolerance), so any float32 re-ordering of the math lands anywhere
# in that band. Checked at 1e-4 instead.
LOOSE_GRAD_RTOL = {"no_obj_embed_spatial": 1e-4}
KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss")


class ReplayClicks(PromptSimulator):
    """Returns the reference's correction clicks instead of sampling them."""

    def __init__(self, cfg: PromptConfig, g: dict[str, torch.Tensor], case: str) -> None:
        super().__init__(cfg)
        self.g = g
        self.case = case

    def correction_click(
        self, gt_masks, pred_high_res_logits, *, training, frame_idx=None, step=None
    ):  # type: ignore[no-untyped-def,override]
        pre = f"{self.case}/frame{frame_idx}/step{step}/"
        coords = self.g[pre + "point_coords"][:, -1:]
        labels = self.g[pre + "point_labels"][:, -1:]
        return coords, labels


@pytest.fixture(scope="module")
def ref(golden: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    g = load_file(str(golden / "tiny" / "train_step.safetensors"))
    meta = json.loads((golden / "tiny" / "train_step.json").read_text())["meta"]
    sd = load_file(str(golden / "tiny" / "state_dict.safetensors"))
    return g, meta, sd


def _prompt_cfg(case: str) -> PromptConfig:
    common = dict(
        prob_to_use_box_input_for_train=0.0,
        prob_to_sample_from_gt_for_train=0.0,
        rand_frames_to_correct_for_train=False,
        rand_init_cond_frames_for_train=False,
        add_all_frames_to_correct_as_cond=True,
    )
    if case == "masks":
        return PromptConfig(
            prob_to_use_pt_input_for_train=0.0,
            num_init_cond_frames_for_train=1,
            num_frames_to_correct_for_train=1,
            num_correction_pt_per_frame=7,
            **common,
        )
    return PromptConfig(
        prob_to_use_pt_input_for_train=1.0,
        num_init_cond_frames_for_train=2,
        num_frames_to_correct_for_train=2,
        num_correction_pt_per_frame=3,
        **common,
    )


@pytest.mark.parametrize("case", ["masks", "points"])
def test_train_step_matches_reference(ref, case: str) -> None:  # type: ignore[no-untyped-def]
    from sam2_core.model.build import build_model

    g, meta, sd = ref
    m = meta[case]
    model = build_model(
        "tiny",
        mode="train",
        overrides=[
            "image_encoder.trunk.drop_path_rate=0.0",
            "memory_attention.layer.dropout=0.0",
            "memory_attention.layer.self_attention.dropout=0.0",
            "memory_attention.layer.cross_attention.dropout=0.0",
        ],
    )
    model.load_state_dict(sd, strict=True)
    tm = SAM2Train(model, ReplayClicks(_prompt_cfg(case), g, case))
    tm.train()
    batch = BatchedVideo(
        img_batch=g[f"{case}/batch/img_batch"],
        masks=g[f"{case}/batch/masks"],
        obj_to_frame_idx=g[f"{case}/batch/obj_to_frame_idx"],
        unique_objects_identifier=g[f"{case}/batch/unique_objects_identifier"],
        frame_orig_size=torch.zeros(*g[f"{case}/batch/masks"].shape[:2], 2, dtype=torch.long),
    )
    assert torch.equal(batch.flat_obj_to_img_idx, g[f"{case}/batch/flat_obj_to_img_idx"])

    backbone_out = tm.forward_image(batch.flat_img_batch)
    plan = tm.prepare_prompt_inputs(batch)
    assert plan.use_pt_input == m["use_pt_input"]
    assert plan.init_cond_frames == m["init_cond_frames"]
    assert plan.frames_not_in_init_cond == m["frames_not_in_init_cond"]
    assert plan.frames_to_add_correction_pt == m["frames_to_add_correction_pt"]
    for t in plan.point_inputs_per_frame:  # inject the reference's initial clicks
        plan.point_inputs_per_frame[t] = {
            "point_coords": g[f"{case}/frame{t}/point_inputs/point_coords"],
            "point_labels": g[f"{case}/frame{t}/point_inputs/point_labels"],
        }
    outs = tm.forward_tracking(backbone_out, plan, batch)
    assert [len(o["multistep_pred_multimasks_high_res"]) for o in outs] == m["steps_per_frame"]
    for t, out in enumerate(outs):
        torch.testing.assert_close(
            out["multistep_pred_masks"],
            g[f"{case}/frame{t}/multistep_pred_masks"],
            rtol=1e-3,
            atol=1e-3,
        )

    loss_fn = MultiStepMultiMasksAndIous(
        {"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1},
        supervise_all_iou=True,
        iou_use_l1_loss=True,
        pred_obj_scores=True,
    )
    losses = loss_fn(outs, batch.masks)
    for key in KEYS:
        torch.testing.assert_close(
            losses[key], g[f"{case}/loss/{key}"], rtol=LOSS_RTOL, atol=1e-12, msg=key
        )
    for t, out in enumerate(outs):
        per = loss_fn.frame_loss(out, batch.masks[t], 2.0)
        for key in KEYS:
            torch.testing.assert_close(
                per[key], g[f"{case}/loss_per_frame/{t}/{key}"], rtol=LOSS_RTOL, atol=1e-9
            )

    losses["core_loss"].backward()
    names = [n for n, _ in model.named_parameters()]
    assert names == m["param_names"]
    has_grad = torch.tensor([p.grad is not None for p in model.parameters()])
    assert torch.equal(has_grad, g[f"{case}/grad/has_grad"])
    norms = torch.stack(
        [
            p.grad.double().norm() if p.grad is not None else torch.zeros((), dtype=torch.float64)
            for p in model.parameters()
        ]
    )
    torch.testing.assert_close(norms.norm(), g[f"{case}/grad/total_norm"], rtol=GRAD_RTOL, atol=0)
    rtol = torch.tensor([LOOSE_GRAD_RTOL.get(n, GRAD_RTOL) for n in names], dtype=torch.float64)
    ref_norms = g[f"{case}/grad/norm_per_param"].double()
    bad = [
        f"{n}: {float(a):.8g} vs {float(b):.8g}"
        for n, a, b, r in zip(names, norms, ref_norms, rtol)
        if abs(float(a) - float(b)) > 1e-6 + float(r) * abs(float(b))
    ]
    assert not bad, "per-parameter gradient norms differ:\n" + "\n".join(bad)
