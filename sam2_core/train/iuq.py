"""Instance-unique querying and transformation equivariance as SAM 2 training objectives.

From "Learning Equivariant Segmentation with Instance-Unique Querying" (Wang, Liang, Liu,
NeurIPS 2022), mapped onto SAM 2's mask decoder: an object's *query* is the hypernetwork output
of its selected mask token (``[C']``, C' = d_model / 8), and its mask logits are the dot
product of that query with the upscaled pixel embedding (``[C', 4h, 4w]``).

* **Dataset-level uniqueness**: a query must not fire on pixels of *other* videos. Foreground
  pixel embeddings of past batches (all ranks) live in a fixed-size detached queue; every
  query's responses on other videos' entries are pushed to zero with a sigmoid focal loss
  (every such pixel is a negative, so no cross-video matching is needed).
* **Transformation equivariance**: the clip is also run through a random geometric transform
  ``g`` (horizontal flip and crop-and-resize, no photometric change); the prediction on
  ``g(clip)`` must match ``g(prediction on clip)`` and ``g(ground truth)``.

Everything here is model-agnostic and single-device; cross-rank gathering is injected by the
trainer (``gather_fn``), so ``torch.distributed`` stays in :mod:`sam2_core.train.distributed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: ``fn(embeddings, video_ids) -> (embeddings, video_ids, ...)`` concatenated over all ranks
GatherFn = Callable[..., tuple[torch.Tensor, ...]]


@dataclass
class UniquenessConfig:
    """Dataset-level uniqueness (inter-video negatives). ``weight == 0`` switches it off.

    ``samples_per_object`` foreground pixels per object and step go into the queue (instance-
    balanced filling, as in the paper); every query is scored against ``negatives_per_query``
    entries of other videos drawn from the queue (0: all of them, the paper's setting).
    """

    weight: float = 0.0
    queue_size: int = 100_000
    samples_per_object: int = 50
    negatives_per_query: int = 0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    def validate(self) -> None:
        if self.weight < 0:
            raise ValueError(f"iuq.uniqueness.weight must be >= 0, got {self.weight}")
        if self.queue_size < 1:
            raise ValueError(f"iuq.uniqueness.queue_size must be >= 1, got {self.queue_size}")
        if self.samples_per_object < 1:
            raise ValueError(
                f"iuq.uniqueness.samples_per_object must be >= 1, got {self.samples_per_object}"
            )
        if self.negatives_per_query < 0:
            raise ValueError(
                f"iuq.uniqueness.negatives_per_query must be >= 0, got {self.negatives_per_query}"
            )


@dataclass
class EquivarianceConfig:
    """Transformation equivariance. ``weight == 0`` or ``prob == 0`` switches it off.

    With probability ``prob`` per step the clip is also run through a random transform: a
    horizontal flip (``hflip_prob``) and a square crop of side ``[min_crop, 1]`` (relative)
    resized back to the full size. The loss is ``consistency_weight`` x soft consistency with
    the transformed (detached) original prediction plus ``gt_weight`` x the trainer's mask loss
    against the transformed ground truth; the paper uses ``weight = 3``.
    """

    weight: float = 0.0
    prob: float = 0.5
    hflip_prob: float = 0.5
    min_crop: float = 0.6
    gt_weight: float = 1.0
    consistency_weight: float = 1.0

    def validate(self) -> None:
        for name in ("weight", "gt_weight", "consistency_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"iuq.equivariance.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("prob", "hflip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"iuq.equivariance.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        if not 0.0 < self.min_crop <= 1.0:
            raise ValueError(f"iuq.equivariance.min_crop must be in (0, 1], got {self.min_crop}")


@dataclass
class IUQConfig:
    """``iuq.*`` of the training config; both objectives are off by default."""

    uniqueness: UniquenessConfig = field(default_factory=UniquenessConfig)
    equivariance: EquivarianceConfig = field(default_factory=EquivarianceConfig)

    @property
    def uniqueness_on(self) -> bool:
        return self.uniqueness.weight > 0

    @property
    def equivariance_on(self) -> bool:
        return self.equivariance.weight > 0 and self.equivariance.prob > 0

    @property
    def enabled(self) -> bool:
        return self.uniqueness_on or self.equivariance_on

    def validate(self) -> None:
        self.uniqueness.validate()
        self.equivariance.validate()


# --------------------------------------------------------------------------------------------
# Uniqueness: the queue and the loss
# --------------------------------------------------------------------------------------------


class PixelQueue:
    """Fixed-size FIFO ring buffer of detached foreground pixel embeddings.

    Memory is allocated once (``[size, dim]`` plus one int64 video id per entry) and never
    grows; new entries overwrite the oldest. The queue is training state only: it is not a
    module parameter or buffer, so it never reaches an exported model.
    """

    def __init__(self, *, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        if size <= 0 or dim <= 0:
            raise ValueError("queue size and dim must be positive")
        self.size = size
        self.dim = dim
        self.embeddings = torch.zeros(size, dim, device=device)
        self.video_ids = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0
        self.count = 0

    def enqueue(self, embeddings: torch.Tensor, video_ids: torch.Tensor) -> None:
        """Add ``embeddings [N, dim]`` tagged with ``video_ids [N]`` (wraps around)."""
        n = embeddings.shape[0]
        if n == 0:
            return
        emb = embeddings.detach().to(self.embeddings.device, self.embeddings.dtype)
        vid = video_ids.detach().to(self.video_ids.device, torch.long)
        if n >= self.size:  # only the newest `size` entries survive
            emb, vid, n = emb[-self.size :], vid[-self.size :], self.size
        idx = (self.ptr + torch.arange(n, device=emb.device)) % self.size
        self.embeddings[idx] = emb
        self.video_ids[idx] = vid
        self.ptr = int((self.ptr + n) % self.size)
        self.count = min(self.size, self.count + n)

    def sample(
        self, *, n: int, exclude_video_id: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw up to ``n`` entries (with replacement) whose video differs; ``[n', dim]``."""
        valid = self.video_ids[: self.count] != exclude_video_id
        candidates = torch.nonzero(valid, as_tuple=False).flatten()
        if candidates.numel() == 0 or n <= 0:
            return self.embeddings.new_zeros(0, self.dim)
        pick = torch.randint(
            candidates.numel(), (n,), generator=generator, device=torch.device("cpu")
        )
        return self.embeddings[candidates[pick.to(candidates.device)]]

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {
            "embeddings": self.embeddings,
            "video_ids": self.video_ids,
            "ptr": self.ptr,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        emb = state["embeddings"]
        vid = state["video_ids"]
        assert isinstance(emb, torch.Tensor) and isinstance(vid, torch.Tensor)
        if tuple(emb.shape) != (self.size, self.dim):
            raise ValueError(
                f"queue state has shape {tuple(emb.shape)}, expected {(self.size, self.dim)}"
            )
        self.embeddings.copy_(emb)
        self.video_ids.copy_(vid)
        self.ptr = int(state["ptr"])
        self.count = int(state["count"])


def sample_foreground_pixels(
    *,
    pixel_embeddings: torch.Tensor,
    masks: torch.Tensor,
    video_ids: torch.Tensor,
    per_object: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance-balanced sampling: up to ``per_object`` foreground pixels of every object.

    Args:
        pixel_embeddings: ``[O, C', h, w]`` upscaled pixel embedding seen by each object.
        masks: ``[O, h, w]`` bool ground truth at the embedding resolution (background excluded).
        video_ids: ``[O]`` video of each object (tags the queue entries).
    Returns:
        ``embeddings [N, C']`` (detached) and ``video_ids [N]``.
    """
    o, c, h, w = pixel_embeddings.shape
    flat = pixel_embeddings.detach().permute(0, 2, 3, 1).reshape(o, h * w, c)
    out_emb, out_vid = [], []
    for i in range(o):
        fg = torch.nonzero(masks[i].reshape(-1), as_tuple=False).flatten()
        if fg.numel() == 0:
            continue
        k = min(per_object, fg.numel())
        perm = torch.randperm(fg.numel(), generator=generator)[:k].to(fg.device)
        out_emb.append(flat[i, fg[perm]])
        out_vid.append(video_ids[i].expand(k))
    if not out_emb:
        return pixel_embeddings.new_zeros(0, c), video_ids.new_zeros(0)
    return torch.cat(out_emb), torch.cat(out_vid)


def focal_to_zero(logits: torch.Tensor, *, alpha: float, gamma: float) -> torch.Tensor:
    """Elementwise sigmoid focal loss for an all-negative target (same form as the mask loss)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    loss = ce * p.pow(gamma)
    if alpha >= 0:
        loss = (1 - alpha) * loss
    return loss


def uniqueness_loss(
    *,
    queries: torch.Tensor,
    video_ids: torch.Tensor,
    queue: PixelQueue,
    cfg: UniquenessConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean focal loss of every query's response on other videos' pixels (target: all zero).

    Each query is scored against all queue entries of other videos (``negatives_per_query ==
    0``) or against that many entries drawn with replacement; per query the focal loss is
    averaged over its negatives, then over the queries that have any.

    Args:
        queries: ``[Q, C']`` per-object mask weights (gradients flow into the mask decoder).
        video_ids: ``[Q]`` video of each query (its own video's pixels are not negatives).
    Returns:
        a float32 scalar; exactly zero (with a graph) while the queue holds no other video.
    """
    q = queries.float()
    if cfg.negatives_per_query > 0:
        losses = []
        for i in range(q.shape[0]):
            neg = queue.sample(
                n=cfg.negatives_per_query, exclude_video_id=int(video_ids[i]), generator=generator
            )
            if neg.shape[0] == 0:
                continue
            logits = neg.to(q.device, q.dtype) @ q[i]
            losses.append(
                focal_to_zero(logits, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma).mean()
            )
        if not losses:
            return q.sum() * 0.0
        return torch.stack(losses).mean()
    bank = queue.embeddings[: queue.count].to(q.device, q.dtype)  # [K, C']
    bank_vid = queue.video_ids[: queue.count].to(q.device)
    valid = (bank_vid[None, :] != video_ids.to(q.device)[:, None]).to(q.dtype)  # [Q, K]
    n_valid = valid.sum(dim=1)
    has_neg = n_valid > 0
    if bank.shape[0] == 0 or not bool(has_neg.any()):
        return q.sum() * 0.0
    focal = focal_to_zero(q @ bank.T, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    per_query = (focal * valid).sum(dim=1) / n_valid.clamp_min(1)
    return per_query[has_neg].mean()


def update_queue(
    *,
    queue: PixelQueue,
    embeddings: torch.Tensor,
    video_ids: torch.Tensor,
    gather_fn: GatherFn | None = None,
) -> None:
    """Enqueue this step's samples from every rank (``gather_fn`` all-gathers under DDP)."""
    if gather_fn is not None:
        gathered = gather_fn(embeddings.detach(), video_ids)
        embeddings, video_ids = gathered[0], gathered[1]
    queue.enqueue(embeddings, video_ids)


# --------------------------------------------------------------------------------------------
# Equivariance: random geometric transform and the loss
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeoTransform:
    """Horizontal flip then crop-and-resize back to the full size, in normalised coordinates.

    The crop is ``[x0, x0 + cw] x [y0, y0 + ch]`` of the (flipped) image in ``[0, 1]`` units;
    the output keeps the input size, so content is magnified by ``1 / cw`` and ``1 / ch``.
    """

    flip: bool
    x0: float
    y0: float
    cw: float
    ch: float

    def _theta(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        # affine_grid maps output coords in [-1, 1] to input coords; x_in = sx * x_out + tx.
        sx, sy = self.cw, self.ch
        tx = 2 * self.x0 + self.cw - 1
        ty = 2 * self.y0 + self.ch - 1
        if self.flip:  # flip the input after cropping in flipped coordinates
            sx, tx = -sx, -tx
        theta = torch.tensor([[sx, 0.0, tx], [0.0, sy, ty]], device=device, dtype=dtype)
        return theta.unsqueeze(0).expand(n, 2, 3)

    def apply(self, x: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
        """Transform ``x [N, C, H, W]`` (images, logits or float masks) to the same size."""
        n, _, h, w = x.shape
        grid = F.affine_grid(self._theta(n, x.device, x.dtype), [n, 1, h, w], align_corners=False)
        return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)

    def apply_points(self, points: torch.Tensor, *, size: tuple[int, int]) -> torch.Tensor:
        """Map pixel ``(x, y)`` points ``[..., 2]`` of an ``(H, W)`` image into the output.

        Pixel ``i`` covers ``[i, i + 1)`` with its centre at ``i + 0.5`` (the convention of
        ``grid_sample(align_corners=False)`` and of SAM's prompt encoder). Points that leave
        the crop are clamped to the border; :meth:`inside` tells which ones do.
        """
        x, y = self._normalised(points, size)
        h, w = size
        return torch.stack([(x * w - 0.5).clamp(0, w - 1), (y * h - 0.5).clamp(0, h - 1)], dim=-1)

    def inside(self, points: torch.Tensor, *, size: tuple[int, int]) -> torch.Tensor:
        """``[...]`` bool: whether each point ``[..., 2]`` stays inside the crop."""
        x, y = self._normalised(points, size)
        return (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)

    def _normalised(
        self, points: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = size
        x = (points[..., 0] + 0.5) / w
        y = (points[..., 1] + 0.5) / h
        if self.flip:
            x = 1.0 - x
        return (x - self.x0) / self.cw, (y - self.y0) / self.ch


def random_geo_transform(*, cfg: EquivarianceConfig, generator: torch.Generator) -> GeoTransform:
    """Draw a flip (``hflip_prob``) and an area-preserving-aspect crop of side >= ``min_crop``."""
    r = torch.rand(4, generator=generator).tolist()
    flip = r[0] < cfg.hflip_prob
    scale = cfg.min_crop + (1.0 - cfg.min_crop) * r[1]
    x0 = (1.0 - scale) * r[2]
    y0 = (1.0 - scale) * r[3]
    return GeoTransform(flip=flip, x0=x0, y0=y0, cw=scale, ch=scale)


def soft_consistency_loss(pred_logits: torch.Tensor, target_prob: torch.Tensor) -> torch.Tensor:
    """Focal-weighted KL plus squared-denominator dice between soft masks; 0 iff equal.

    Same form as the mask loss (a sigmoid focal term and a dice term), written so that an exactly
    equivariant model gets exactly zero: binary cross-entropy minus the target's own entropy is
    the KL divergence, and ``1 - (2 sum pq + 1) / (sum p^2 + sum q^2 + 1)`` vanishes at ``p == q``.

    Args:
        pred_logits: ``[N, H, W]`` logits on the transformed clip.
        target_prob: ``[N, H, W]`` probabilities of the transformed original prediction.
    """
    q = target_prob.clamp(1e-6, 1 - 1e-6)
    p = torch.sigmoid(pred_logits)
    ce = F.binary_cross_entropy_with_logits(pred_logits, q, reduction="none")
    ent = -(q * q.log() + (1 - q) * (1 - q).log())
    kl = (ce - ent).clamp_min(0) * (p - q).abs().pow(2.0)  # focal-style down-weighting of easy px
    pf, qf = p.flatten(1), q.flatten(1)
    dice = 1 - (2 * (pf * qf).sum(1) + 1) / (pf.pow(2).sum(1) + qf.pow(2).sum(1) + 1)
    return kl.flatten(1).mean(1).mean() * 20.0 + dice.mean()


def equivariance_loss(
    *,
    pred_on_transformed: torch.Tensor,
    pred_on_original: torch.Tensor,
    transform: GeoTransform,
    gt_transformed: torch.Tensor | None,
    cfg: EquivarianceConfig,
    mask_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``L = consistency(f(g x), g f(x)) + gt_weight * mask_loss(f(g x), g y)`` (unweighted).

    Args:
        pred_on_transformed: ``[N, H, W]`` logits predicted on ``g(clip)``.
        pred_on_original: ``[N, H, W]`` logits predicted on the clip (detached here: it is the
            reference the transformed view must agree with).
        gt_transformed: ``[N, H, W]`` bool ``g(ground truth)``, or ``None`` to skip that term.
        mask_loss_fn: ``(logits, target) -> scalar`` of the trainer's mask loss (focal + dice).
    """
    # Transform the logits, then squash: sigmoid does not commute with bilinear resampling.
    ref = torch.sigmoid(transform.apply(pred_on_original.detach().unsqueeze(1)).squeeze(1))
    loss = cfg.consistency_weight * soft_consistency_loss(pred_on_transformed, ref)
    if gt_transformed is not None and cfg.gt_weight > 0 and mask_loss_fn is not None:
        loss = loss + cfg.gt_weight * mask_loss_fn(pred_on_transformed, gt_transformed.float())
    return loss
