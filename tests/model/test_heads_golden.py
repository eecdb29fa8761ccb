"""Golden parity of the SAM heads (prompt encoder + mask decoder + object pointer) of tiny SAM 2.1.

References: ``../shared/golden/tiny/sam_heads.safetensors`` (README section 4), computed by Meta's
``SAM2Base.forward_sam_heads`` on the stored image-encoder features, fp32 on the CPU. Every
prompt case (points, box, mask, point + low-res mask, no prompt) x (multimask, single mask,
single mask with dynamic fallback), plus the prompt-encoder and decoder intermediates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sam2_core.model import SAM2Base

MAX_ABS = 1e-4  # logits, IoUs, pointers, embeddings
SCORE_ATOL = 1e-3  # object-score readout is scaled by 400 in the golden weights
CASES = ("points", "box", "mask", "point_and_lowres_mask", "no_prompt")
MODES = ("mm1", "mm0", "mm0_dyn")
OUTPUT_NAMES = (
    "low_res_multimasks",
    "high_res_multimasks",
    "ious",
    "low_res_masks",
    "high_res_masks",
    "obj_ptr",
    "object_score_logits",
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this module runs with one intra-op thread (see conftest)."""


@pytest.fixture(scope="module")
def feats(golden: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden / "tiny" / "image_encoder.safetensors"))


@pytest.fixture(scope="module")
def heads(golden: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden / "tiny" / "sam_heads.safetensors"))


def _close(name: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    tol = SCORE_ATOL if name.endswith("object_score_logits") else MAX_ABS
    err = (got.float() - ref.float()).abs().max().item()
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


def _prompts(heads: dict[str, torch.Tensor], case: str) -> dict[str, Any]:
    point_inputs = None
    if f"inputs/{case}/point_coords" in heads:
        point_inputs = {
            "point_coords": heads[f"inputs/{case}/point_coords"],
            "point_labels": heads[f"inputs/{case}/point_labels"],
        }
    return {"point_inputs": point_inputs, "mask_inputs": heads.get(f"inputs/{case}/mask_inputs")}


def test_dense_pe(tiny: SAM2Base, heads: dict[str, torch.Tensor]) -> None:
    _close("image_pe", tiny.sam_prompt_encoder.get_dense_pe(), heads["inputs/image_pe"])


def test_forward_image_projects_high_res_levels(
    tiny: SAM2Base, feats: dict[str, torch.Tensor]
) -> None:
    """``forward_image`` = image encoder + ``conv_s0``/``conv_s1`` on FPN levels 0/1."""
    with torch.no_grad():
        out = tiny.forward_image(feats["image"])
    for i in range(3):
        _close(f"backbone_fpn.{i}", out["backbone_fpn"][i], feats[f"backbone_fpn.{i}"])
        _close(f"vision_pos_enc.{i}", out["vision_pos_enc"][i], feats[f"vision_pos_enc.{i}"])
    _close("vision_features", out["vision_features"], feats["vision_features"])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", MODES)
def test_forward_sam_heads(
    tiny: SAM2Base,
    feats: dict[str, torch.Tensor],
    heads: dict[str, torch.Tensor],
    case: str,
    mode: str,
) -> None:
    decoder = tiny.sam_mask_decoder
    decoder.dynamic_multimask_via_stability = mode == "mm0_dyn"
    try:
        with torch.no_grad():
            out = tiny.forward_sam_heads(
                backbone_features=feats["vision_features"],
                high_res_features=[feats["backbone_fpn.0"], feats["backbone_fpn.1"]],
                multimask_output=mode == "mm1",
                **_prompts(heads, case),
            )
    finally:
        decoder.dynamic_multimask_via_stability = False
    compared = 0
    for name, got in zip(OUTPUT_NAMES, out):
        key = f"{case}/{mode}/{name}"
        if key in heads:
            _close(key, got, heads[key])
            compared += 1
    assert compared >= 5


@pytest.mark.parametrize("case", CASES)
def test_prompt_encoder_and_decoder_intermediates(
    tiny: SAM2Base,
    feats: dict[str, torch.Tensor],
    heads: dict[str, torch.Tensor],
    case: str,
) -> None:
    """Sparse/dense prompt embeddings and the raw decoder outputs (all 4 mask tokens)."""
    prompts = _prompts(heads, case)
    b = feats["vision_features"].shape[0]
    pi = prompts["point_inputs"]
    if pi is None:
        pi = {
            "point_coords": torch.zeros(b, 1, 2),
            "point_labels": -torch.ones(b, 1, dtype=torch.int32),
        }
    mask = prompts["mask_inputs"]
    pe = tiny.sam_prompt_encoder
    if mask is not None and mask.shape[-2:] != pe.mask_input_size:
        mask = torch.nn.functional.interpolate(
            mask, size=pe.mask_input_size, mode="bilinear", align_corners=False, antialias=True
        )
    if f"{case}/prompt_encoder/mask_prompt_32" in heads:
        assert mask is not None
        _close("mask_prompt_32", mask, heads[f"{case}/prompt_encoder/mask_prompt_32"])
    with torch.no_grad():
        sparse, dense = pe(points=(pi["point_coords"], pi["point_labels"]), boxes=None, masks=mask)
        all_masks, all_iou, tokens, score = tiny.sam_mask_decoder.predict_masks(
            image_embeddings=feats["vision_features"],
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[feats["backbone_fpn.0"], feats["backbone_fpn.1"]],
        )
    _close("sparse", sparse, heads[f"{case}/prompt_encoder/sparse_embeddings"])
    _close("dense", dense, heads[f"{case}/prompt_encoder/dense_embeddings"])
    _close("all_masks", all_masks, heads[f"{case}/decoder/all_masks"])
    _close("all_iou_pred", all_iou, heads[f"{case}/decoder/all_iou_pred"])
    _close("mask_tokens_out", tokens, heads[f"{case}/decoder/mask_tokens_out"])
    _close("decoder/object_score_logits", score, heads[f"{case}/decoder/object_score_logits"])


def test_box_prompt_equals_two_labelled_points(tiny: SAM2Base) -> None:
    """``boxes=`` and two points with labels 2/3 embed identically (apart from padding)."""
    pe = tiny.sam_prompt_encoder
    box = torch.tensor([[10.0, 20.0, 90.0, 100.0]])
    with torch.no_grad():
        s_box, _ = pe(points=None, boxes=box, masks=None)
        s_pts, _ = pe(
            points=(box.reshape(1, 2, 2), torch.tensor([[2, 3]], dtype=torch.int32)),
            boxes=None,
            masks=None,
        )
    assert s_box.shape == (1, 2, 64) and s_pts.shape == (1, 3, 64)  # + padding point
    torch.testing.assert_close(s_box, s_pts[:, :2])
