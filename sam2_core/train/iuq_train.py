"""IUQ objectives wired into the SAM 2 training forward (see :mod:`sam2_core.train.iuq`).

* :class:`CapturingSAM2Train` records, per frame, the *query* of every object (the hypernetwork
  output of the mask token whose mask was selected: argmax predicted IoU in multimask mode,
  token 0 otherwise) and the upscaled pixel embedding it was multiplied with, both with their
  graph, through the mask decoder's opt-in ``capture`` dict.
* :class:`IUQTrainModule` is what DDP wraps when IUQ is on: one forward runs the clip and,
  when asked, the geometrically transformed clip, so DDP sees both graphs in one pass.
* The transformed clip replays the step's prompt decisions (:class:`ReplayPrompts`): same
  prompt type, initial conditioning frames and corrected frames; mask prompts and the ground
  truth are transformed, clicks and boxes get transformed coordinates. A click that the crop
  cuts away is replaced by a fresh click drawn the usual way on the transformed view.
* :class:`IUQObjective` turns outputs into the two loss terms, keeps the pixel queue and fills
  it after each optimizer step from every rank.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_core.model.sam2 import TrackStepOutput
from sam2_core.train.iuq import (
    GatherFn,
    GeoTransform,
    IUQConfig,
    PixelQueue,
    equivariance_loss,
    random_geo_transform,
    sample_foreground_pixels,
    uniqueness_loss,
    update_queue,
)
from sam2_core.train.losses import LossConfig, dice_loss, sigmoid_focal_loss
from sam2_core.train.model_train import SAM2Train, TrainBatch
from sam2_core.train.prompts import PointInputs, PromptPlan, PromptSimulator

log = logging.getLogger(__name__)

QUERY_KEY = "iuq_query"  # [O, C'] per frame
PIXELS_KEY = "iuq_pixels"  # [O, C', 4h, 4w] per frame
LOSS_UNIQUENESS = "iuq_uniqueness"
LOSS_EQUIVARIANCE = "iuq_equivariance"
EQUIVARIANCE_APPLIED = "iuq_equivariance_applied"
#: offset of made-up video ids for batches without ``unique_objects_identifier`` (synthetic)
_SYNTHETIC_VIDEO_BASE = 1 << 40


def selected_token(ious: Tensor) -> Tensor:
    """Index ``[B]`` of the mask token behind the selected mask, from the step's IoUs ``[B, M]``.

    ``M > 1`` (multimask): SAM 2 keeps the output with the highest predicted IoU, i.e. token
    ``argmax + 1`` (token 0 is the single-mask token). ``M == 1``: token 0.
    """
    if ious.shape[1] > 1:
        return torch.argmax(ious, dim=-1) + 1
    return torch.zeros(ious.shape[0], dtype=torch.long, device=ious.device)


class CapturingSAM2Train(SAM2Train):
    """:class:`SAM2Train` that adds ``iuq_query``/``iuq_pixels`` to every frame's output.

    The values come from the decoder's latest call on the frame (after the last correction
    click; for mask-prompted frames, the call that produces the object pointer). A frame on
    which the decoder did not run gets neither key.
    """

    def track_step(self, **kwargs: Any) -> TrackStepOutput:
        decoder = self.model.sam_mask_decoder
        if decoder.capture is None:
            return super().track_step(**kwargs)
        decoder.capture.clear()
        out = super().track_step(**kwargs)
        cap = decoder.capture
        if "hyper_in" in cap:
            hyper_in = cap["hyper_in"]  # [O, num_mask_tokens, C']
            token = selected_token(out["multistep_pred_ious"][-1]).to(hyper_in.device)
            rows = torch.arange(hyper_in.shape[0], device=hyper_in.device)
            out[QUERY_KEY] = hyper_in[rows, token]
            out[PIXELS_KEY] = cap["upscaled_embedding"]
        cap.clear()
        return out


# ----------------------------------------------------------------------------------------------
# The transformed view


def transform_batch(batch: Any, transform: GeoTransform) -> Any:
    """``g(batch)``: frames ``[T, B, 3, H, W]`` (bilinear) and masks ``[T, O, H, W]`` (nearest).

    Works for any dataclass batch with ``img_batch`` and ``masks`` (``BatchedVideo``,
    synthetic batches); the other fields are kept.
    """
    t, b, c, h, w = batch.img_batch.shape
    imgs = transform.apply(batch.img_batch.reshape(t * b, c, h, w)).reshape(t, b, c, h, w)
    masks = transform_masks(batch.masks, transform)
    return dataclasses.replace(batch, img_batch=imgs, masks=masks)


def transform_masks(masks: Tensor, transform: GeoTransform) -> Tensor:
    """Bool masks ``[..., H, W]`` -> transformed bool masks of the same shape (nearest)."""
    lead, (h, w) = masks.shape[:-2], masks.shape[-2:]
    flat = masks.reshape(-1, 1, h, w).float()
    return (transform.apply(flat, mode="nearest") > 0.5).reshape(*lead, h, w)


def _transform_box(coords: Tensor, transform: GeoTransform, size: tuple[int, int]) -> Tensor:
    """Box corners ``[B, 2, 2]`` (top-left, bottom-right): transform and re-sort (flip swaps x)."""
    pts = transform.apply_points(coords, size=size)
    return torch.stack([pts.min(dim=1).values, pts.max(dim=1).values], dim=1)


class ReplayPrompts(PromptSimulator):
    """Prompts of the transformed clip: the original plan and clicks, transformed.

    Args:
        base: the trainer's simulator (its click generator draws the replacement clicks).
        plan: the original clip's plan.
        outs: the original clip's frame outputs (``multistep_point_inputs`` holds every click).
        transform: the transform ``g``.
        masks: ``[T, O, H, W]`` transformed ground truth.
    """

    def __init__(
        self,
        *,
        base: PromptSimulator,
        plan: PromptPlan,
        outs: list[TrackStepOutput],
        transform: GeoTransform,
        masks: Tensor,
    ) -> None:
        super().__init__(base.cfg)
        self.base = base
        self.outs = outs
        self.transform = transform
        self.size = (int(masks.shape[-2]), int(masks.shape[-1]))
        self.replaced_clicks = 0
        self.transformed_plan = self._transform_plan(plan, masks)

    def _transform_plan(self, plan: PromptPlan, masks: Tensor) -> PromptPlan:
        gts = {t: masks[t].unsqueeze(1) for t in range(plan.num_frames)}
        points: dict[int, PointInputs] = {}
        for t, p in plan.point_inputs_per_frame.items():
            coords, labels = p["point_coords"], p["point_labels"]
            if bool((labels >= 2).all()) and coords.shape[1] == 2:  # a box: label 2, 3
                new = _transform_box(coords, self.transform, self.size)
            else:
                new, labels = self._replay_clicks(coords, labels, gts[t], None)
            points[t] = {"point_coords": new, "point_labels": labels}
        return dataclasses.replace(
            plan,
            gt_masks_per_frame=gts,
            mask_inputs_per_frame={t: gts[t] for t in plan.mask_inputs_per_frame},
            point_inputs_per_frame=points,
        )

    def _replay_clicks(
        self, coords: Tensor, labels: Tensor, gt: Tensor, pred: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Transform clicks ``[B, N, 2]``; clicks the crop cut away are drawn afresh."""
        new = self.transform.apply_points(coords, size=self.size)
        lost = ~self.transform.inside(coords, size=self.size)  # [B, N]
        if bool(lost.any()):
            fresh, fresh_labels = self.base.click(gt, pred, "uniform")  # [B, 1, 2], [B, 1]
            new = torch.where(lost[..., None], fresh.to(new.dtype), new)
            labels = torch.where(lost, fresh_labels.to(labels.dtype), labels)
            self.replaced_clicks += int(lost.sum())
        return new, labels

    def plan(self, masks: Tensor, *, training: bool) -> PromptPlan:
        return self.transformed_plan

    def correction_click(
        self,
        gt_masks: Tensor,
        pred_high_res_logits: Tensor,
        *,
        training: bool,
        frame_idx: int | None = None,
        step: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The original's ``step``-th correction click of ``frame_idx``, transformed."""
        if frame_idx is None or step is None:
            raise ValueError("ReplayPrompts.correction_click needs frame_idx and step")
        recorded = self.outs[frame_idx]["multistep_point_inputs"][step]
        coords = recorded["point_coords"][:, -1:]
        labels = recorded["point_labels"][:, -1:]
        return self._replay_clicks(coords, labels, gt_masks, pred_high_res_logits > 0)


class IUQTrainModule(nn.Module):
    """The module DDP wraps when IUQ is on (its parameters are exactly the model's).

    ``forward(batch, transform)`` returns ``(outs, eq_outs)``: the clip's frame outputs (with
    ``iuq_query``/``iuq_pixels`` when ``capture``) and, when ``transform`` is given, the outputs
    on ``g(clip)`` (else None). Prompt decisions are drawn once, for the original clip.
    """

    def __init__(self, train_module: SAM2Train, *, capture: bool) -> None:
        super().__init__()
        tm = train_module
        self.core = CapturingSAM2Train(
            tm.model,
            tm.prompts,
            act_ckpt_image_encoder=tm.act_ckpt_image_encoder,
            act_ckpt_iterative_pt_sampling=tm.act_ckpt_iterative_pt_sampling,
            forward_backbone_per_frame_for_eval=tm.forward_backbone_per_frame_for_eval,
        )
        self.capture = capture
        self.replaced_clicks = 0

    def forward(
        self, batch: TrainBatch, transform: GeoTransform | None = None
    ) -> tuple[list[TrackStepOutput], list[TrackStepOutput] | None]:
        core = self.core
        decoder = core.model.sam_mask_decoder
        decoder.capture = {} if self.capture else None
        try:
            backbone_out = core.forward_image(batch.flat_img_batch)
            plan = core.prepare_prompt_inputs(batch)
            outs = core.forward_tracking(backbone_out, plan, batch)
        finally:
            # Off before anything else runs (the transformed view, checkpoint recomputation).
            decoder.capture = None
        if transform is None:
            return outs, None
        eq_batch = transform_batch(batch, transform)
        replay = ReplayPrompts(
            base=core.prompts, plan=plan, outs=outs, transform=transform, masks=eq_batch.masks
        )
        eq_core = SAM2Train(
            core.model,
            replay,
            act_ckpt_image_encoder=core.act_ckpt_image_encoder,
            act_ckpt_iterative_pt_sampling=core.act_ckpt_iterative_pt_sampling,
        )
        eq_core.train(self.training)
        eq_backbone = eq_core.forward_image(eq_batch.flat_img_batch)
        eq_outs = eq_core.forward_tracking(eq_backbone, replay.transformed_plan, eq_batch)
        self.replaced_clicks = replay.replaced_clicks
        return outs, eq_outs


# ----------------------------------------------------------------------------------------------
# Losses and the queue


def object_video_ids(batch: Any, *, step: int, rank: int, world_size: int) -> Tensor:
    """``[O]`` dataset-level video id of every object (``unique_objects_identifier[0, :, 0]``).

    Batches without identifiers (synthetic clips: every clip is a new video) get ids that are
    unique per (step, rank, video in batch).
    """
    ident = getattr(batch, "unique_objects_identifier", None)
    if ident is not None:
        return ident[0, :, 0].long()
    vid = batch.obj_to_frame_idx[0, :, 1].long()
    return _SYNTHETIC_VIDEO_BASE + (step * world_size + rank) * batch.num_videos + vid


def _zero_anchor(outs: list[TrackStepOutput]) -> Tensor | None:
    """``0 * sum`` of every output tensor with a graph (keeps DDP's used-parameter set exact)."""
    terms: list[Tensor] = []
    stack: list[Any] = [outs]
    while stack:
        obj = stack.pop()
        if isinstance(obj, Tensor):
            if obj.requires_grad:
                terms.append(obj.float().sum())
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
    return torch.stack(terms).sum() * 0.0 if terms else None


def make_mask_loss(loss_cfg: LossConfig) -> Callable[[Tensor, Tensor], Tensor]:
    """The trainer's mask loss (weighted focal + dice, per-object mean) on ``[N, H, W]``."""
    w_mask = float(loss_cfg.weight_dict.get("loss_mask", 20.0))
    w_dice = float(loss_cfg.weight_dict.get("loss_dice", 1.0))

    def mask_loss(logits: Tensor, target: Tensor) -> Tensor:
        x, y = logits.float().flatten(1), target.float().flatten(1)
        n = float(max(x.shape[0], 1))
        focal = sigmoid_focal_loss(x, y, n, alpha=loss_cfg.focal_alpha, gamma=loss_cfg.focal_gamma)
        return w_mask * focal + w_dice * dice_loss(x, y, n)

    return mask_loss


class IUQObjective:
    """Per-process IUQ state: config, pixel queue, RNG streams; used by the trainer.

    Args:
        cfg: the ``iuq`` config.
        model: the ``SAM2Base`` (its decoder width sets the query dimension).
        loss_cfg: the trainer's loss config (the equivariance GT term uses the same mask loss).
        seed, rank, world_size: the per-step equivariance decision depends only on ``(seed,
            step)``, so every rank agrees; transforms and pixel sampling depend on the rank.
        gather_fn: all-gathers tensors across ranks, ``fn(*tensors) -> tuple`` (e.g.
            :func:`sam2_core.train.distributed.all_gather_padded`); None: this rank only.
    """

    def __init__(
        self,
        cfg: IUQConfig,
        *,
        model: nn.Module,
        loss_cfg: LossConfig,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        gather_fn: GatherFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.gather_fn = gather_fn
        self.mask_loss = make_mask_loss(loss_cfg)
        decoder: Any = model.get_submodule("sam_mask_decoder")
        dim = int(decoder.transformer_dim) // 8
        device = next(model.parameters()).device
        self.queue = PixelQueue(size=cfg.uniqueness.queue_size, dim=dim, device=device)
        self._pending: tuple[Tensor, Tensor] | None = None
        self._sample_gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * rank + 11)

    def wrap(self, train_module: SAM2Train) -> IUQTrainModule:
        return IUQTrainModule(train_module, capture=self.cfg.uniqueness_on)

    # -- per step --------------------------------------------------------------------------
    def draw_transform(self, step: int) -> GeoTransform | None:
        """The transform of ``step`` or None; the yes/no decision is identical on every rank."""
        eq = self.cfg.equivariance
        if not self.cfg.equivariance_on:
            return None
        if np.random.default_rng([self.seed, step, 0xE0]).random() >= eq.prob:
            return None
        gen = torch.Generator().manual_seed(
            self.seed * 1_000_003 + step * 7919 + self.rank * 104_729
        )
        return random_geo_transform(cfg=eq, generator=gen)

    def forward_losses(
        self,
        module: nn.Module,
        batch: Any,
        loss_fn: Callable[[list[TrackStepOutput], Tensor], dict[str, Tensor]],
        *,
        step: int,
        core_key: str = "core_loss",
    ) -> tuple[list[TrackStepOutput], dict[str, Tensor]]:
        """Forward (through ``module``, e.g. the DDP wrapper), base losses plus the IUQ terms.

        Adds ``iuq_uniqueness`` and ``iuq_equivariance`` (unweighted) and
        ``iuq_equivariance_applied`` to the loss dict and their weighted sum to ``core_key``.
        """
        transform = self.draw_transform(step)
        outs, eq_outs = module(batch, transform)
        losses = dict(loss_fn(outs, batch.masks))
        core = losses[core_key]
        vids = object_video_ids(batch, step=step, rank=self.rank, world_size=self.world_size)
        if self.cfg.uniqueness_on:
            uniq = self.uniqueness(outs, vids)
            self._pending = self.queue_samples(outs, batch.masks, vids)
            core = core + self.cfg.uniqueness.weight * uniq
            losses["iuq_uniqueness"] = uniq.detach()
        if self.cfg.equivariance_on:
            if eq_outs is not None and transform is not None:
                eq_loss = self.equivariance(outs, eq_outs, batch.masks, transform)
                core = core + self.cfg.equivariance.weight * eq_loss
                losses["iuq_equivariance"] = eq_loss.detach()
                losses["iuq_equivariance_applied"] = eq_loss.new_ones(()).detach()
            else:
                losses["iuq_equivariance"] = core.new_zeros(()).detach()
                losses["iuq_equivariance_applied"] = core.new_zeros(()).detach()
        losses[core_key] = core
        return outs, losses

    def uniqueness(self, outs: list[TrackStepOutput], video_ids: Tensor) -> Tensor:
        """Uniqueness loss of every frame's queries against the queue (scalar)."""
        queries, qvids = [], []
        for out in outs:
            if QUERY_KEY in out:
                queries.append(out[QUERY_KEY])
                qvids.append(video_ids.to(out[QUERY_KEY].device))
        if not queries:
            raise RuntimeError(
                "iuq.uniqueness is on but no frame recorded a query (the model's mask decoder "
                "never ran); check use_obj_ptrs_in_encoder / mask prompts"
            )
        return uniqueness_loss(
            queries=torch.cat(queries),
            video_ids=torch.cat(qvids),
            queue=self.queue,
            cfg=self.cfg.uniqueness,
            generator=self._sample_gen,
        )

    def queue_samples(
        self, outs: list[TrackStepOutput], masks: Tensor, video_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Up to ``samples_per_object`` GT-foreground pixel embeddings per object (all frames).

        ``masks``: ``[T, O, H, W]`` GT, reduced to the embedding resolution by area averaging
        (a pixel is foreground when at least half of it is covered).
        """
        embs, fgs = [], []
        for t, out in enumerate(outs):
            if PIXELS_KEY not in out:
                continue
            pix = out[PIXELS_KEY].detach().float()  # [O, C', h, w]
            gt = F.interpolate(masks[t].float().unsqueeze(1), size=pix.shape[-2:], mode="area")
            embs.append(pix)
            fgs.append(gt[:, 0] >= 0.5)
        if not embs:
            return masks.new_zeros(0, self.queue.dim, dtype=torch.float32), video_ids[:0]
        # Frames side by side: per object, one pool of pixels over the whole clip.
        return sample_foreground_pixels(
            pixel_embeddings=torch.cat(embs, dim=-1),
            masks=torch.cat(fgs, dim=-1),
            video_ids=video_ids.to(embs[0].device),
            per_object=self.cfg.uniqueness.samples_per_object,
            generator=self._sample_gen,
        )

    def equivariance(
        self,
        outs: list[TrackStepOutput],
        eq_outs: list[TrackStepOutput],
        masks: Tensor,
        transform: GeoTransform,
    ) -> Tensor:
        """Sum over frames (like the mask loss) of the equivariance loss on the final masks.

        Frames whose output is the mask prompt itself (no prediction) are skipped.
        """
        gt_t = transform_masks(masks, transform)  # [T, O, H, W]
        total: Tensor | None = None
        for t, (out, eq_out) in enumerate(zip(outs, eq_outs)):
            if out.get("mask_inputs") is not None:
                continue
            term = equivariance_loss(
                pred_on_transformed=eq_out["pred_masks_high_res"][:, 0].float(),
                pred_on_original=out["pred_masks_high_res"][:, 0].float(),
                transform=transform,
                gt_transformed=gt_t[t],
                cfg=self.cfg.equivariance,
                mask_loss_fn=self.mask_loss,
            )
            total = term if total is None else total + term
        anchor = _zero_anchor(eq_outs)
        if total is None:
            total = masks.new_zeros((), dtype=torch.float32)
        return total if anchor is None else total + anchor

    def after_step(self) -> None:
        """Enqueue this step's pixel samples from every rank (a collective under DDP)."""
        if not self.cfg.uniqueness_on:
            return
        if self._pending is None:
            emb = torch.zeros(0, self.queue.dim, device=self.queue.embeddings.device)
            vid = torch.zeros(0, dtype=torch.long, device=emb.device)
        else:
            emb, vid = self._pending
        update_queue(queue=self.queue, embeddings=emb, video_ids=vid, gather_fn=self.gather_fn)
        self._pending = None

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The queue (identical on every rank), saved with the training state only."""
        return {
            "queue": {
                k: v.detach().cpu() if isinstance(v, Tensor) else v
                for k, v in self.queue.state_dict().items()
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.queue.load_state_dict(state["queue"])
        except (KeyError, ValueError) as e:
            log.warning("IUQ queue not restored (%s); starting with an empty queue", e)
