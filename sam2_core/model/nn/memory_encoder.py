"""Memory encoder of SAM 2.1: fuses a frame's features with its predicted mask into a memory.

``mask [B, 1, 16h, 16w]`` is downsampled to the feature grid (MaskDownSampler), added to the
projected image features ``[B, in_dim, h, w]``, refined by ConvNeXt blocks (Fuser) and projected
to ``out_dim`` (the memory width, 64 in SAM 2.1).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from sam2_core.model.nn.common import LayerNorm2d
from sam2_core.model.nn.hiera import DropPath


class MaskDownSampler(nn.Module):
    """Downsample a mask by ``total_stride`` with repeated ``[Conv(stride), LayerNorm2d, act]``
    stages (channels x stride^2 each: 1 -> 4 -> 16 -> 64 -> 256 for stride 2) and a final 1x1
    conv to ``embed_dim``. Modules live in ``encoder`` (official indices ``encoder.{i}``)."""

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        if stride**num_layers != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        self.encoder = nn.Sequential()
        in_chans = out_chans = 1
        for _ in range(num_layers):
            out_chans = in_chans * stride**2
            self.encoder.append(
                nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=padding)
            )
            self.encoder.append(LayerNorm2d(out_chans))
            self.encoder.append(activation())
            in_chans = out_chans
        self.encoder.append(nn.Conv2d(out_chans, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` -> ``[B, embed_dim, H / total_stride, W / total_stride]``."""
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, pointwise MLP (x4, GELU), layer scale,
    residual. ``[B, dim, H, W]`` -> same shape."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(
            dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma: nn.Parameter | None = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim))
            if layer_scale_init_value > 0
            else None
        )
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.norm(self.dwconv(x))
        x = x.permute(0, 2, 3, 1)  # channels-last for the pointwise Linear layers
        x = self.pwconv2(self.act(self.pwconv1(x)))
        if self.gamma is not None:
            x = self.gamma * x
        return residual + self.drop_path(x.permute(0, 3, 1, 2))


class Fuser(nn.Module):
    """Optional 1x1 input projection followed by ``num_layers`` deep copies of ``layer``."""

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        dim: int | None = None,
        input_projection: bool = False,
    ) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Identity()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        if input_projection:
            if dim is None:
                raise ValueError("Fuser(input_projection=True) needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Encode ``(frame features, mask)`` into a memory map and its position encoding."""

    def __init__(
        self,
        out_dim: int,
        mask_downsampler: nn.Module,
        fuser: nn.Module,
        position_encoding: nn.Module,
        in_dim: int = 256,
    ) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj: nn.Module = nn.Identity()
        if out_dim != in_dim:
            self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> dict[str, Any]:
        """Args:
            pix_feat: frame features ``[B, in_dim, H, W]`` (raw stride-16 backbone map).
            masks: mask logits ``[B, 1, 16H, 16W]``; a sigmoid is applied unless
                ``skip_mask_sigmoid`` (SAM2Base passes already scaled masks).

        Returns:
            ``{"vision_features": [B, out_dim, H, W], "vision_pos_enc": [[B, out_dim, H, W]]}``.
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}
