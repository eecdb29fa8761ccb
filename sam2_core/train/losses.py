"""SAM 2 training losses: focal, dice, IoU-prediction and object-score terms.

Numerically equivalent to the official ``MultiStepMultiMasksAndIous`` (weights 20/1/1/1 in the
MOSE recipe). Every elementary loss divides by ``num_objects`` so that a frame's loss is a
per-object average; frames and correction steps are then *summed*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class")
CORE_LOSS_KEY = "core_loss"


def dice_loss(
    inputs: Tensor, targets: Tensor, num_objects: float, *, loss_on_multimask: bool = False
) -> Tensor:
    """Soft dice loss on mask logits.

    Args:
        inputs: logits, ``[N, M, H, W]`` when ``loss_on_multimask`` else ``[N, K]`` (flattened).
        targets: same shape, values in {0, 1}.
        num_objects: normaliser.

    Returns:
        ``[N, M]`` per-mask losses (multimask) or a scalar sum over ``N``.
    """
    probs = inputs.sigmoid()
    start = 2 if loss_on_multimask else 1
    probs = probs.flatten(start)
    targets = targets.flatten(start)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    # +1 smoothing keeps the loss defined (and 0) when both prediction and target are empty.
    loss = 1 - (numerator + 1) / (denominator + 1)
    if loss_on_multimask:
        return loss / num_objects
    return loss.sum() / num_objects


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    num_objects: float,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    loss_on_multimask: bool = False,
) -> Tensor:
    """Sigmoid focal loss (RetinaNet), mean over pixels.

    ``alpha < 0`` disables the class balancing; ``gamma = 0`` gives plain BCE.

    Args:
        inputs: logits ``[N, M, H, W]`` (multimask) or ``[N, K]``.
        targets: same shape, in {0, 1}.

    Returns:
        ``[N, M]`` (multimask: pixel mean per mask / num_objects) or a scalar
        (mean over ``K``, sum over ``N``, / num_objects).
    """
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if loss_on_multimask:
        if loss.dim() != 4:
            raise ValueError(f"multimask focal loss expects [N, M, H, W], got {tuple(loss.shape)}")
        return loss.flatten(2).mean(-1) / num_objects
    return loss.mean(1).sum() / num_objects


def iou_loss(
    inputs: Tensor,
    targets: Tensor,
    pred_ious: Tensor,
    num_objects: float,
    *,
    loss_on_multimask: bool = False,
    use_l1_loss: bool = False,
) -> Tensor:
    """Regression loss between predicted IoUs and the actual IoU of thresholded masks.

    Args:
        inputs: mask logits ``[N, M, H, W]`` (thresholded at 0).
        targets: ``[N, M, H, W]``.
        pred_ious: ``[N, M]`` predicted IoUs.

    Returns:
        ``[N, M]`` (multimask) or a scalar sum / num_objects.
    """
    if inputs.dim() != 4 or targets.dim() != 4:
        raise ValueError("iou_loss expects 4-D inputs and targets [N, M, H, W]")
    pred_mask = inputs.flatten(2) > 0
    gt_mask = targets.flatten(2) > 0
    area_i = (pred_mask & gt_mask).sum(-1).float()
    area_u = (pred_mask | gt_mask).sum(-1).float()
    actual_ious = area_i / area_u.clamp(min=1.0)
    if use_l1_loss:
        loss = F.l1_loss(pred_ious, actual_ious, reduction="none")
    else:
        loss = F.mse_loss(pred_ious, actual_ious, reduction="none")
    if loss_on_multimask:
        return loss / num_objects
    return loss.sum() / num_objects


def global_num_objects(num_local: int, device: torch.device | str = "cpu") -> float:
    """Object count averaged over ranks (all-reduce only when torch.distributed is initialised).

    The official recipe normalises every rank's loss by the *mean* object count, so that ranks
    with few objects do not get an outsized gradient contribution. Clamped to >= 1.
    """
    n = torch.tensor(float(num_local), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(n)
        n = n / torch.distributed.get_world_size()
    return float(n.clamp(min=1).item())


@dataclass
class LossConfig:
    """Configuration of :class:`MultiStepMultiMasksAndIous` (MOSE fine-tune values)."""

    weight_dict: dict[str, float] = field(
        default_factory=lambda: {
            "loss_mask": 20.0,
            "loss_dice": 1.0,
            "loss_iou": 1.0,
            "loss_class": 1.0,
        }
    )
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    supervise_all_iou: bool = True
    iou_use_l1_loss: bool = True
    pred_obj_scores: bool = True
    focal_gamma_obj_score: float = 0.0
    focal_alpha_obj_score: float = -1.0


class MultiStepMultiMasksAndIous(torch.nn.Module):
    """Loss over all frames and all prediction steps of a SAM 2 training forward.

    Input per frame (see :mod:`sam2_core.train.model_train`): ``multistep_pred_multimasks_high_res``
    (list over steps S of ``[O, M, H, W]`` logits), ``multistep_pred_ious`` (list of ``[O, M]``)
    and ``multistep_object_score_logits`` (list of ``[O, 1]``); targets ``[T, O, H, W]``.
    """

    def __init__(
        self,
        weight_dict: Mapping[str, float] | None = None,
        *,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        supervise_all_iou: bool = False,
        iou_use_l1_loss: bool = False,
        pred_obj_scores: bool = False,
        focal_gamma_obj_score: float = 0.0,
        focal_alpha_obj_score: float = -1.0,
    ) -> None:
        super().__init__()
        weights = dict(weight_dict or LossConfig().weight_dict)
        for key in ("loss_mask", "loss_dice", "loss_iou"):
            if key not in weights:
                raise ValueError(f"loss weight_dict must contain {key!r}, got {sorted(weights)}")
        unknown = set(weights) - set(LOSS_KEYS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; allowed: {LOSS_KEYS}")
        weights.setdefault("loss_class", 0.0)
        self.weight_dict = weights
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.supervise_all_iou = supervise_all_iou
        self.iou_use_l1_loss = iou_use_l1_loss
        self.pred_obj_scores = pred_obj_scores
        self.focal_gamma_obj_score = focal_gamma_obj_score
        self.focal_alpha_obj_score = focal_alpha_obj_score

    @classmethod
    def from_config(cls, cfg: LossConfig) -> MultiStepMultiMasksAndIous:
        return cls(
            cfg.weight_dict,
            focal_alpha=cfg.focal_alpha,
            focal_gamma=cfg.focal_gamma,
            supervise_all_iou=cfg.supervise_all_iou,
            iou_use_l1_loss=cfg.iou_use_l1_loss,
            pred_obj_scores=cfg.pred_obj_scores,
            focal_gamma_obj_score=cfg.focal_gamma_obj_score,
            focal_alpha_obj_score=cfg.focal_alpha_obj_score,
        )

    def forward(
        self, outs_batch: Sequence[Mapping[str, Any]], targets_batch: Tensor
    ) -> dict[str, Tensor]:
        """Sum of per-frame losses. ``targets_batch``: ``[T, O, H, W]`` (bool or float).

        Returns a dict with the four unweighted components and ``core_loss`` (weighted sum),
        each a 0-d tensor summed over frames.
        """
        if len(outs_batch) != targets_batch.shape[0]:
            raise ValueError(
                f"got {len(outs_batch)} frame outputs for {targets_batch.shape[0]} target frames"
            )
        num_objects = global_num_objects(targets_batch.shape[1], targets_batch.device)
        total: dict[str, Tensor] = {}
        for outs, targets in zip(outs_batch, targets_batch):
            for key, value in self.frame_loss(outs, targets, num_objects).items():
                total[key] = total[key] + value if key in total else value
        return total

    def frame_loss(
        self, outputs: Mapping[str, Any], targets: Tensor, num_objects: float
    ) -> dict[str, Tensor]:
        """Losses of one frame (summed over its prediction steps). ``targets``: ``[O, H, W]``."""
        target_masks = targets.unsqueeze(1).float()
        masks_list = outputs["multistep_pred_multimasks_high_res"]
        ious_list = outputs["multistep_pred_ious"]
        scores_list = outputs["multistep_object_score_logits"]
        if not (len(masks_list) == len(ious_list) == len(scores_list)):
            raise ValueError("multistep outputs have different numbers of steps")
        zero = target_masks.new_zeros(())
        losses = {key: zero for key in LOSS_KEYS}
        for masks, ious, scores in zip(masks_list, ious_list, scores_list):
            step = self._step_losses(masks, target_masks, ious, scores, num_objects)
            for key in LOSS_KEYS:
                losses[key] = losses[key] + step[key]
        losses[CORE_LOSS_KEY] = self.reduce_loss(losses)
        return losses

    def _step_losses(
        self,
        src_masks: Tensor,
        target_masks: Tensor,
        ious: Tensor,
        object_score_logits: Tensor,
        num_objects: float,
    ) -> dict[str, Tensor]:
        """One prediction step. ``src_masks`` ``[O, M, H, W]``, ``target_masks`` ``[O, 1, H, W]``."""
        target_masks = target_masks.expand_as(src_masks)
        # Losses are computed in float32 even when the forward ran under bf16 autocast.
        src_masks = src_masks.float()
        ious = ious.float()
        focal = sigmoid_focal_loss(
            src_masks,
            target_masks,
            num_objects,
            alpha=self.focal_alpha,
            gamma=self.focal_gamma,
            loss_on_multimask=True,
        )
        dice = dice_loss(src_masks, target_masks, num_objects, loss_on_multimask=True)
        iou = iou_loss(
            src_masks,
            target_masks,
            ious,
            num_objects,
            loss_on_multimask=True,
            use_l1_loss=self.iou_use_l1_loss,
        )
        if self.pred_obj_scores:
            # Object present on this frame = any GT pixel; absent objects only train the score.
            target_obj = target_masks[:, 0].flatten(1).any(dim=1, keepdim=True).float()
            loss_class = sigmoid_focal_loss(
                object_score_logits.float(),
                target_obj,
                num_objects,
                alpha=self.focal_alpha_obj_score,
                gamma=self.focal_gamma_obj_score,
            )
        else:
            target_obj = torch.ones(focal.shape[0], 1, device=focal.device, dtype=focal.dtype)
            loss_class = focal.new_zeros(())

        if focal.shape[1] > 1:
            # Multimask output: supervise only the candidate that best matches the target.
            combo = focal * self.weight_dict["loss_mask"] + dice * self.weight_dict["loss_dice"]
            best = combo.argmin(dim=-1)
            rows = torch.arange(focal.shape[0], device=focal.device)
            loss_mask = focal[rows, best].unsqueeze(1)
            loss_dice = dice[rows, best].unsqueeze(1)
            if self.supervise_all_iou:
                loss_iou = iou.mean(dim=-1).unsqueeze(1)
            else:
                loss_iou = iou[rows, best].unsqueeze(1)
        else:
            loss_mask, loss_dice, loss_iou = focal, dice, iou
        return {
            "loss_mask": (loss_mask * target_obj).sum(),
            "loss_dice": (loss_dice * target_obj).sum(),
            "loss_iou": (loss_iou * target_obj).sum(),
            "loss_class": loss_class,
        }

    def reduce_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of the components (weights of 0 are skipped)."""
        core: Tensor | None = None
        for key, weight in self.weight_dict.items():
            if weight == 0:
                continue
            term = losses[key] * weight
            core = term if core is None else core + term
        if core is None:
            return next(iter(losses.values())) * 0.0
        return core
