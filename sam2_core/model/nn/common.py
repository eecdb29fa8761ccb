"""Building blocks shared across the SAM 2.1 modules (names match the official state dict)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers (``layers.{i}``) with an activation between them.

    Args:
        input_dim, hidden_dim, output_dim: widths; hidden layers all use ``hidden_dim``.
        num_layers: number of Linear layers.
        activation: module class applied after every layer but the last.
        sigmoid_output: apply a sigmoid to the output.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., input_dim] -> [..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of ``[B, C, H, W]`` maps."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        # Kept in the reference's arithmetic order: F.layer_norm on a channels-last view is
        # faster but moves the golden train-step losses past their 1e-5 relative tolerance.
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def activation_module(name: str) -> type[nn.Module]:
    """Map a config string (``relu``, ``gelu``) to an activation module class."""
    table: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
    try:
        return table[name.lower()]
    except KeyError as exc:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(table)}") from exc


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections and optional downsampling.

    The internal width is ``embedding_dim // downsample_rate``; keys and values may come from a
    space of width ``kv_in_dim`` (memory attention reads 64-d memories with 256-d queries).
    Uses ``scaled_dot_product_attention`` (flash/memory-efficient kernels on CUDA).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _merge_heads(x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``q [B, Nq, C]``, ``k, v [B, Nk, kv_in_dim]`` -> ``[B, Nq, C]``."""
        qh = self._split_heads(self.q_proj(q))
        kh = self._split_heads(self.k_proj(k))
        vh = self._split_heads(self.v_proj(v))
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=p)
        return self.out_proj(self._merge_heads(out))
