"""Image encoder of SAM 2.1: Hiera trunk + FPN neck with sine position encodings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class FpnNeck(nn.Module):
    """Feature pyramid over the trunk outputs: 1x1 lateral convs to ``d_model`` and a top-down
    path (x2 upsampling + fusion) on the levels in ``fpn_top_down_levels``.

    ``backbone_channel_list`` lists the trunk widths from the coarsest level to the finest
    (``convs[0]`` is applied to the stride-32 map). Level ``i`` of the output has the resolution
    of trunk level ``i`` (0 = finest).
    """

    def __init__(
        self,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        fpn_top_down_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.position_encoding = position_encoding
        self.backbone_channel_list = list(backbone_channel_list)
        self.d_model = d_model
        self.convs = nn.ModuleList()
        for dim in self.backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module(
                "conv",
                nn.Conv2d(dim, d_model, kernel_size=kernel_size, stride=stride, padding=padding),
            )
            self.convs.append(lateral)
        # Trunk maps arrive as channels_last views (NHWC permuted) and conv backward then returns
        # channels_last weight grads: same-format weights keep DDP's gradient buckets in step.
        self.convs.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        if fpn_top_down_levels is None:
            fpn_top_down_levels = range(len(self.convs))
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        # Interpolation runs in float32 (as in the reference; nearest/bilinear under bf16 would
        # change the values the top-down sum sees).
        align = None if self.fpn_interp_model == "nearest" else False
        return F.interpolate(
            x.to(dtype=torch.float32),
            scale_factor=2.0,
            mode=self.fpn_interp_model,
            align_corners=align,
            antialias=False,
        )

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``xs``: trunk maps, finest first ``[B, C_i, H_i, W_i]`` -> (features, pos encodings),
        each a list of ``[B, d_model, H_i, W_i]``, finest first."""
        n = len(self.convs)
        if len(xs) != n:
            raise ValueError(f"FpnNeck expects {n} feature maps, got {len(xs)}")
        out: list[torch.Tensor] = [xs[0]] * n
        pos: list[torch.Tensor] = [xs[0]] * n
        prev: torch.Tensor | None = None
        for i in range(n - 1, -1, -1):
            lateral = self.convs[n - 1 - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                prev = lateral + self._upsample(prev)
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; ``scalp`` drops that many of the coarsest levels from the output."""

    def __init__(self, trunk: nn.Module, neck: FpnNeck, scalp: int = 0) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp
        trunk_channels = list(getattr(trunk, "channel_list", []))
        if trunk_channels != list(neck.backbone_channel_list):
            raise ValueError(
                f"trunk channel_list {trunk_channels} does not match the neck's "
                f"backbone_channel_list {neck.backbone_channel_list}"
            )

    def forward(self, sample: torch.Tensor) -> dict[str, Any]:
        """``sample [B, 3, H, W]`` (normalised image) ->

        * ``vision_features``: coarsest kept level ``[B, d_model, H/16, W/16]`` (scalp=1),
        * ``vision_pos_enc``: list of ``[B, d_model, H_i, W_i]``, finest first,
        * ``backbone_fpn``: list of ``[B, d_model, H_i, W_i]``, finest first.
        """
        features, pos = self.neck(self.trunk(sample))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
