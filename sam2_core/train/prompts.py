"""Prompt simulation for SAM 2 training (the official SAM2Train recipe).

Per training clip the simulator decides (with a numpy ``Generator`` that is seeded identically on
every rank, so all ranks take the same branch and DDP sees the same graph shape):

* mask prompts (the GT masks) versus clicks (probability ``prob_to_use_pt_input``);
* with clicks, per initial conditioning frame a noisy box (``prob_to_use_box_input``) or one
  positive click from the GT mask;
* 1..``num_init_cond_frames`` initial conditioning frames (frame 0 plus random others);
* 1..``num_frames_to_correct`` frames that get ``num_correction_pt_per_frame`` correction clicks,
  each sampled from the error region of the previous prediction (or, with probability
  ``prob_to_sample_from_gt``, from the GT mask alone).

Click *coordinates* and box noise come from the rank's own ``torch.Generator`` so that every
rank sees different clicks. Image datasets (one frame) are always prompted with points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CLICK_METHODS = ("uniform", "center")
PointInputs = dict[str, Tensor]


@dataclass
class PromptConfig:
    """All prompt-simulation knobs; defaults are the official MOSE fine-tune values."""

    prob_to_use_pt_input_for_train: float = 0.5
    prob_to_use_pt_input_for_eval: float = 0.0
    prob_to_use_box_input_for_train: float = 0.5
    prob_to_use_box_input_for_eval: float = 0.0
    num_frames_to_correct_for_train: int = 2
    num_frames_to_correct_for_eval: int = 1
    rand_frames_to_correct_for_train: bool = True
    rand_frames_to_correct_for_eval: bool = False
    num_init_cond_frames_for_train: int = 2
    num_init_cond_frames_for_eval: int = 1
    rand_init_cond_frames_for_train: bool = True
    rand_init_cond_frames_for_eval: bool = False
    add_all_frames_to_correct_as_cond: bool = True
    num_correction_pt_per_frame: int = 7
    pt_sampling_for_eval: str = "center"
    prob_to_sample_from_gt_for_train: float = 0.1
    #: box noise: uniform in +-min(box_noise * side, box_noise_bound) pixels per coordinate
    box_noise: float = 0.1
    box_noise_bound: int = 20
    #: seed of the prompt-*decision* generator (must be equal on every rank)
    decision_seed: int = 42

    def validate(self) -> None:
        for name in (
            "prob_to_use_pt_input_for_train",
            "prob_to_use_pt_input_for_eval",
            "prob_to_use_box_input_for_train",
            "prob_to_use_box_input_for_eval",
            "prob_to_sample_from_gt_for_train",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"prompts.{name} must be in [0, 1], got {value}")
        for mode in ("train", "eval"):
            n_init = getattr(self, f"num_init_cond_frames_for_{mode}")
            n_corr = getattr(self, f"num_frames_to_correct_for_{mode}")
            if n_init < 1:
                raise ValueError(f"prompts.num_init_cond_frames_for_{mode} must be >= 1")
            if getattr(self, f"prob_to_use_pt_input_for_{mode}") > 0 and n_corr < n_init:
                raise ValueError(
                    f"prompts.num_frames_to_correct_for_{mode} ({n_corr}) must be >= "
                    f"num_init_cond_frames_for_{mode} ({n_init}) when points are used"
                )
        if self.pt_sampling_for_eval not in ("uniform", "center"):
            raise ValueError(
                f"prompts.pt_sampling_for_eval must be 'uniform' or 'center', "
                f"got {self.pt_sampling_for_eval!r}"
            )
        if self.num_correction_pt_per_frame < 0:
            raise ValueError("prompts.num_correction_pt_per_frame must be >= 0")


# ----------------------------------------------------------------------------------------------
# Geometry helpers


def mask_to_box(masks: Tensor) -> Tensor:
    """Tight xyxy boxes of masks ``[B, 1, H, W]`` (bool) -> ``[B, 1, 4]`` (int64).

    An empty mask gives ``(W, H, -1, -1)`` like the official helper.
    """
    b, _, h, w = masks.shape
    xs = torch.arange(w, device=masks.device, dtype=torch.int64)
    ys = torch.arange(h, device=masks.device, dtype=torch.int64)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid_x = grid_x.expand(b, 1, h, w)
    grid_y = grid_y.expand(b, 1, h, w)
    min_x = torch.where(masks, grid_x, w).flatten(-2).min(dim=-1).values
    max_x = torch.where(masks, grid_x, -1).flatten(-2).max(dim=-1).values
    min_y = torch.where(masks, grid_y, h).flatten(-2).min(dim=-1).values
    max_y = torch.where(masks, grid_y, -1).flatten(-2).max(dim=-1).values
    return torch.stack((min_x, min_y, max_x, max_y), dim=-1)


def sample_box_points(
    masks: Tensor,
    *,
    noise: float = 0.1,
    noise_bound: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Noisy box prompt from masks ``[B, 1, H, W]``.

    Returns ``(coords [B, 2, 2] float xy pixels, labels [B, 2] int32 = (2, 3))``.
    """
    b, _, h, w = masks.shape
    device = masks.device
    box = mask_to_box(masks).float()
    labels = torch.tensor([2, 3], dtype=torch.int32, device=device).repeat(b, 1)
    if noise > 0.0:
        bound = torch.tensor(float(noise_bound), device=device)
        box_w = box[..., 2] - box[..., 0]
        box_h = box[..., 3] - box[..., 1]
        max_dx = torch.minimum(box_w * noise, bound)
        max_dy = torch.minimum(box_h * noise, bound)
        rand = torch.rand((b, 1, 4), generator=generator, device=_gen_device(generator, device))
        jitter = (2 * rand.to(device) - 1) * torch.stack((max_dx, max_dy, max_dx, max_dy), dim=-1)
        box = box + jitter
        upper = torch.tensor([w - 1, h - 1, w - 1, h - 1], device=device, dtype=box.dtype)
        box = torch.minimum(box.clamp(min=0), upper)
    return box.reshape(-1, 2, 2), labels


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def sample_random_points_from_errors(
    gt_masks: Tensor,
    pred_masks: Tensor | None,
    num_pt: int = 1,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Uniformly random clicks in the error region ("uniform" training sampler).

    A negative click falls in the false-positive region (or, when the prediction is already
    perfect, anywhere in the background), a positive one in the false-negative region; which of
    the two is chosen follows from the argmax of masked uniform noise, i.e. proportional to the
    region sizes.

    Args:
        gt_masks: ``[B, 1, H, W]`` bool.
        pred_masks: ``[B, 1, H, W]`` bool or None (treated as all-background).

    Returns:
        ``(points [B, num_pt, 2] float xy, labels [B, num_pt] int32)`` (1 positive, 0 negative).
    """
    if pred_masks is None:
        pred_masks = torch.zeros_like(gt_masks)
    if gt_masks.dtype != torch.bool or pred_masks.dtype != torch.bool:
        raise TypeError("gt_masks and pred_masks must be bool tensors")
    if gt_masks.shape != pred_masks.shape or gt_masks.shape[1] != 1:
        raise ValueError(
            f"expected two [B, 1, H, W] masks, got {gt_masks.shape}, {pred_masks.shape}"
        )
    b, _, h, w = gt_masks.shape
    device = gt_masks.device
    fp = ~gt_masks & pred_masks
    fn = gt_masks & ~pred_masks
    all_correct = (gt_masks == pred_masks).flatten(2).all(dim=2)[..., None, None]
    noise = torch.rand(
        (b, num_pt, h, w, 2), generator=generator, device=_gen_device(generator, device)
    ).to(device)
    noise[..., 0] *= fp | (all_correct & ~gt_masks)
    noise[..., 1] *= fn
    idx = noise.flatten(2).argmax(dim=2)
    labels = (idx % 2).to(torch.int32)
    pix = idx // 2
    points = torch.stack([pix % w, pix // w], dim=2).to(torch.float)
    return points, labels


def sample_one_point_from_error_center(
    gt_masks: Tensor, pred_masks: Tensor | None, *, padding: bool = True
) -> tuple[Tensor, Tensor]:
    """Deterministic RITM-style click at the centre of the largest error region ("center").

    Uses the L2 distance transform of the false-negative and false-positive regions (padded by
    one pixel so image borders count as boundary); positive if the FN maximum is larger.
    Returns ``(points [B, 1, 2] float xy, labels [B, 1] int32)``.
    """
    import cv2

    if pred_masks is None:
        pred_masks = torch.zeros_like(gt_masks)
    b, _, _, w = gt_masks.shape
    fp = ~gt_masks & pred_masks
    fn = gt_masks & ~pred_masks
    if padding:
        fp = F.pad(fp, (1, 1, 1, 1), "constant", False)
        fn = F.pad(fn, (1, 1, 1, 1), "constant", False)
    points = torch.zeros(b, 1, 2, dtype=torch.float)
    labels = torch.ones(b, 1, dtype=torch.int32)
    fn_np = fn.cpu().numpy().astype(np.uint8)
    fp_np = fp.cpu().numpy().astype(np.uint8)
    for i in range(b):
        fn_dt = cv2.distanceTransform(fn_np[i, 0], cv2.DIST_L2, 0)
        fp_dt = cv2.distanceTransform(fp_np[i, 0], cv2.DIST_L2, 0)
        if padding:
            fn_dt = fn_dt[1:-1, 1:-1]
            fp_dt = fp_dt[1:-1, 1:-1]
        is_positive = bool(fn_dt.max() > fp_dt.max())
        flat = int((fn_dt if is_positive else fp_dt).argmax())
        points[i, 0, 0] = flat % w
        points[i, 0, 1] = flat // w
        labels[i, 0] = int(is_positive)
    return points.to(gt_masks.device), labels.to(gt_masks.device)


def get_next_point(
    gt_masks: Tensor,
    pred_masks: Tensor | None,
    method: str,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One click per object: ``"uniform"`` (training) or ``"center"`` (evaluation)."""
    if method == "uniform":
        return sample_random_points_from_errors(gt_masks, pred_masks, 1, generator=generator)
    if method == "center":
        return sample_one_point_from_error_center(gt_masks, pred_masks)
    raise ValueError(f"unknown click sampling method {method!r}; allowed: 'uniform', 'center'")


def concat_points(old: PointInputs | None, points: Tensor, labels: Tensor) -> PointInputs:
    """Append clicks ``[B, N, 2]``/``[B, N]`` to point inputs (None -> new inputs)."""
    if old is None:
        return {"point_coords": points, "point_labels": labels}
    return {
        "point_coords": torch.cat([old["point_coords"], points], dim=1),
        "point_labels": torch.cat([old["point_labels"], labels], dim=1),
    }


# ----------------------------------------------------------------------------------------------
# Per-clip plan


@dataclass
class PromptPlan:
    """Prompts of one training clip (frame indices are positions within the clip)."""

    num_frames: int
    use_pt_input: bool
    init_cond_frames: list[int]
    frames_not_in_init_cond: list[int]
    frames_to_add_correction_pt: list[int]
    #: ``[O, 1, H, W]`` bool GT per frame
    gt_masks_per_frame: dict[int, Tensor] = field(default_factory=dict)
    mask_inputs_per_frame: dict[int, Tensor] = field(default_factory=dict)
    point_inputs_per_frame: dict[int, PointInputs] = field(default_factory=dict)

    @property
    def processing_order(self) -> list[int]:
        """Initial conditioning frames first (frame 0 first), then the rest in time order."""
        return self.init_cond_frames + self.frames_not_in_init_cond


class PromptSimulator:
    """Draws prompt decisions and clicks for SAM 2 training and evaluation.

    Args:
        cfg: the knobs.
        click_seed: seed of this rank's torch generator for click coordinates and box noise
            (use a rank-dependent value).
    """

    def __init__(self, cfg: PromptConfig | None = None, *, click_seed: int = 0) -> None:
        self.cfg = cfg or PromptConfig()
        self.cfg.validate()
        self.rng = np.random.default_rng(self.cfg.decision_seed)
        self._click_seed = click_seed
        self._generators: dict[str, torch.Generator] = {}

    # -- generators -------------------------------------------------------------------------
    def generator(self, device: torch.device | str) -> torch.Generator:
        """This rank's click generator on ``device`` (created and seeded on first use)."""
        key = str(torch.device(device))
        if key not in self._generators:
            gen = torch.Generator(device=torch.device(device))
            gen.manual_seed(self._click_seed)
            self._generators[key] = gen
        return self._generators[key]

    def state_dict(self) -> dict[str, Any]:
        return {
            "decision_rng": self.rng.bit_generator.state,
            "click_generators": {k: g.get_state() for k, g in self._generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["decision_rng"]
        for key, gen_state in state.get("click_generators", {}).items():
            try:
                self.generator(key).set_state(gen_state)
            except RuntimeError:
                # e.g. a CUDA generator state restored on a CPU-only machine: keep the fresh seed
                continue

    # -- decisions --------------------------------------------------------------------------
    def plan(self, masks: Tensor, *, training: bool) -> PromptPlan:
        """Decide the prompts of one clip. ``masks``: ``[T, O, H, W]`` bool GT."""
        c = self.cfg
        mode = "train" if training else "eval"
        num_frames = int(masks.shape[0])
        prob_pt: float = getattr(c, f"prob_to_use_pt_input_for_{mode}")
        prob_box: float = getattr(c, f"prob_to_use_box_input_for_{mode}")
        num_correct: int = getattr(c, f"num_frames_to_correct_for_{mode}")
        rand_correct: bool = getattr(c, f"rand_frames_to_correct_for_{mode}")
        num_init: int = getattr(c, f"num_init_cond_frames_for_{mode}")
        rand_init: bool = getattr(c, f"rand_init_cond_frames_for_{mode}")
        if num_frames == 1:
            # Image datasets: always clicks on the single frame.
            prob_pt, num_correct, num_init = 1.0, 1, 1
        num_init = min(num_init, num_frames)
        # The order of the draws below matters: it reproduces the official decision stream.
        use_pt_input = bool(self.rng.random() < prob_pt)
        if rand_init and num_init > 1:
            num_init = int(self.rng.integers(1, num_init, endpoint=True))
        if use_pt_input and rand_correct and num_correct > num_init:
            num_correct = int(self.rng.integers(num_init, num_correct, endpoint=True))
        num_correct = min(num_correct, num_frames)

        init_frames = [0]
        if num_init > 1:
            extra = self.rng.choice(range(1, num_frames), num_init - 1, replace=False)
            init_frames += [int(t) for t in extra]
        others = [t for t in range(num_frames) if t not in init_frames]
        plan = PromptPlan(
            num_frames=num_frames,
            use_pt_input=use_pt_input,
            init_cond_frames=init_frames,
            frames_not_in_init_cond=others,
            frames_to_add_correction_pt=[],
            gt_masks_per_frame={t: masks[t].unsqueeze(1) for t in range(num_frames)},
        )
        method = "uniform" if training else c.pt_sampling_for_eval
        for t in init_frames:
            gt = plan.gt_masks_per_frame[t]
            if not use_pt_input:
                plan.mask_inputs_per_frame[t] = gt
            elif self.rng.random() < prob_box:
                coords, labels = sample_box_points(
                    gt,
                    noise=c.box_noise,
                    noise_bound=c.box_noise_bound,
                    generator=self.generator(gt.device),
                )
                plan.point_inputs_per_frame[t] = {"point_coords": coords, "point_labels": labels}
            else:
                coords, labels = self.click(gt, None, method)
                plan.point_inputs_per_frame[t] = {"point_coords": coords, "point_labels": labels}

        if use_pt_input:
            if num_correct <= len(init_frames):
                plan.frames_to_add_correction_pt = list(init_frames)
            else:
                extra = self.rng.choice(others, num_correct - len(init_frames), replace=False)
                plan.frames_to_add_correction_pt = init_frames + [int(t) for t in extra]
        return plan

    def sample_from_gt(self, *, training: bool) -> bool:
        """Whether the next correction click ignores the prediction (shared decision)."""
        p = self.cfg.prob_to_sample_from_gt_for_train
        if training and p > 0:
            return bool(self.rng.random() < p)
        return False

    def click(
        self, gt_masks: Tensor, pred_masks: Tensor | None, method: str
    ) -> tuple[Tensor, Tensor]:
        """One click per object from the error region (coordinates from this rank's generator)."""
        gen = self.generator(gt_masks.device) if method == "uniform" else None
        return get_next_point(gt_masks, pred_masks, method, generator=gen)

    def correction_click(
        self,
        gt_masks: Tensor,
        pred_high_res_logits: Tensor,
        *,
        training: bool,
        frame_idx: int | None = None,
        step: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Next correction click given the current high-res prediction logits ``[O, 1, H, W]``.

        ``frame_idx``/``step`` identify the click (unused here; replay samplers in tests use them).
        """
        pred = None if self.sample_from_gt(training=training) else pred_high_res_logits > 0
        method = "uniform" if training else self.cfg.pt_sampling_for_eval
        return self.click(gt_masks, pred, method)
