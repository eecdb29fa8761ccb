"""Predictor outputs: masks of every object at the video resolution (bilinear resize,
optional non-overlap) and the optional filling of small holes in predicted masks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam2_core.model.predictor.state import InferenceState
from sam2_core.model.sam2 import NO_OBJ_SCORE, SAM2Base


class MaskPostprocessor:
    """Turns the model's low-resolution logits into the predictor's outputs.

    Args:
        fill_hole_area: fill background holes up to this area (pixels of the low-res mask) in
            predicted masks (0 = off).
        non_overlap_masks: in the returned video-resolution masks, keep only the
            highest-scoring object on each pixel.
    """

    def __init__(self, *, fill_hole_area: int, non_overlap_masks: bool) -> None:
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = non_overlap_masks

    def fill_holes(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """``[B, 1, h, w]`` logits with small background holes filled (unchanged when off)."""
        if self.fill_hole_area > 0:
            return fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)
        return pred_masks

    def consolidate(self, state: InferenceState, frame_idx: int, *, is_cond: bool) -> torch.Tensor:
        """Masks ``[O, 1, H, W]`` of every object on a frame (NO_OBJ_SCORE where none):
        temporary (just prompted) outputs first, then committed ones."""
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        h, w = state.video_height, state.video_width
        out = torch.full(
            (state.num_objects, 1, h, w), NO_OBJ_SCORE, dtype=torch.float32, device=state.device
        )
        for obj_idx in range(state.num_objects):
            cand = state.temp_output_dict_per_obj[obj_idx][key].get(frame_idx)
            od = state.output_dict_per_obj[obj_idx]
            if cand is None:
                cand = od["cond_frame_outputs"].get(frame_idx)
            if cand is None:
                cand = od["non_cond_frame_outputs"].get(frame_idx)
            if cand is None:
                continue
            m = cand["pred_masks"].to(state.device).float()
            if m.shape[-2:] != (h, w):
                m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            out[obj_idx : obj_idx + 1] = m
        return out

    def to_video_res(self, state: InferenceState, masks: torch.Tensor) -> torch.Tensor:
        """Bilinear resize of ``[O, 1, h, w]`` logits to the video size (float32)."""
        masks = masks.to(state.device).float()
        size = (state.video_height, state.video_width)
        if masks.shape[-2:] != size:
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            masks = SAM2Base.apply_non_overlapping_constraints(masks)
        return masks


def fill_holes_in_mask_scores(mask: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set background holes (8-connected, area <= ``max_area``) inside masks to logit 0.1.

    ``mask [B, 1, h, w]`` logits; computed on the CPU with OpenCV (the official code needs a
    CUDA extension for this).
    """
    import cv2

    out = mask.clone()
    bg = (mask <= 0).squeeze(1).cpu().numpy().astype(np.uint8)
    for i in range(bg.shape[0]):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(bg[i], connectivity=8)
        small = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] <= max_area]
        if not small:
            continue
        hole = torch.from_numpy(np.isin(labels, small)).to(mask.device)
        out[i, 0] = torch.where(hole, torch.full_like(out[i, 0], 0.1), out[i, 0])
    return out
