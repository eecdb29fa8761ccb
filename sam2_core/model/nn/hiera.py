"""Hiera trunk of SAM 2.1 (hierarchical ViT with windowed attention and query pooling).

Tokens stay channels-last ``[B, H, W, C]`` inside the trunk; the four stage outputs are returned
channels-first. Parameter names equal the official ``image_encoder.trunk.*`` keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sam2_core.model.nn.common import MLP


class DropPath(nn.Module):
    """Stochastic depth: zero the residual branch of whole samples with probability ``drop_prob``
    during training (survivors are rescaled by ``1 / keep_prob``)."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        if keep_prob > 0.0 and self.scale_by_keep:
            mask.div_(keep_prob)
        return x * mask


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split ``[B, H, W, C]`` into non-overlapping windows ``[B * nW, ws, ws, C]``.

    The map is zero-padded at the bottom/right to a multiple of ``window_size``; padded tokens
    take part in attention unmasked (as in the reference). Returns the padded size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, ws, ws, C]`` -> ``[B, H, W, C]`` (crop)."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :]
    return x


def _pool_stride(pool: nn.Module | None) -> int:
    """Stride of a square query-pooling module (1 without pooling)."""
    if pool is None:
        return 1
    stride = getattr(pool, "stride", 1)
    return int(stride[0] if isinstance(stride, tuple) else stride)


def _pool_bhwc(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Apply a 2-D pooling module to a channels-last map ``[B, H, W, C]``."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Conv patchifier: ``[B, 3, H, W]`` -> ``[B, H/4, W/4, embed_dim]`` (k7, s4, p3)."""

    def __init__(
        self,
        kernel_size: tuple[int, int] = (7, 7),
        stride: tuple[int, int] = (4, 4),
        padding: tuple[int, int] = (3, 3),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over ``[B, H, W, dim]`` tokens with optional max-pooling of the queries
    (the output then has the pooled resolution); fused ``qkv`` projection, SDPA."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H', W', dim_out]`` (H' = H / q_stride when pooling)."""
        return self.proj(self._attend(self.qkv(x)))

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention of projected tokens ``[B, H, W, 3 * dim_out]`` -> ``[B, H', W', dim_out]``
        (before the output projection)."""
        b, h, w, _ = qkv.shape
        # [B, HW, 3, heads, d] -> three [B, heads, HW, d]
        qkv = qkv.reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.q_pool is not None:
            # Pool q on the spatial grid: [B, heads, HW, d] -> [B, HW, heads*d] as a map.
            q_map = q.transpose(1, 2).reshape(b, h, w, -1)
            q_map = _pool_bhwc(q_map, self.q_pool)
            h, w = q_map.shape[1:3]
            q = q_map.reshape(b, h * w, self.num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, h, w, -1)

    def _attend_padded_windows(self, qkv: torch.Tensor, window_size: int) -> torch.Tensor:
        """Windowed attention over the real tokens ``[B, H, W, 3 * dim_out]`` of a map that the
        reference zero-pads to whole windows -> ``[B, H', W', dim_out]`` (before the output
        projection; ``H' = H // q_stride`` with query pooling, else ``H``).

        A zero-padded token projects to exactly the ``qkv`` bias, so all ``P`` padded tokens of
        a window share one key and one value. Attending to them equals attending to a single
        "bias token" whose score is raised by ``log(P)`` (``P`` equal terms in the softmax
        sum), so nothing padded is ever materialised: the keys are the window's real tokens
        plus that one token with an additive mask. Windows fall in at most four groups by how
        many real rows/columns they hold (whole windows, the last window row, the last window
        column, the corner); each group is one batched attention call, and the groups are
        stitched back in map order. Padded queries are never computed: their outputs are
        cropped by the reference. With query pooling, windows start on multiples of the
        stride, so pooling a window's real rows/columns gives exactly its uncropped outputs.
        """
        b, h, w, c3 = qkv.shape
        ws, heads = window_size, self.num_heads
        c = c3 // 3
        stride = _pool_stride(self.q_pool)
        bias = self.qkv.bias
        pad_kv = bias[c:] if bias is not None else qkv.new_zeros(2 * c)
        k_pad, v_pad = pad_kv.view(2, heads, 1, -1).unbind(0)  # [heads, 1, d] each

        def parts(n: int) -> list[tuple[int, int]]:
            """(window count, real rows per window) of the whole and the partial windows."""
            out = [(n // ws, ws)] if n // ws else []
            return out + ([(1, n % ws)] if n % ws else [])

        def sizes(ps: list[tuple[int, int]]) -> list[int]:
            return [n * r for n, r in ps]

        # split (not slicing): its backward concatenates the groups' gradients instead of
        # zero-filling a full-size gradient per group.
        row_parts, col_parts = parts(h), parts(w)
        rows = []
        for (nr, r), row_block in zip(row_parts, qkv.split(sizes(row_parts), dim=1)):
            cols = []
            for (nc, cw), g in zip(col_parts, row_block.split(sizes(col_parts), dim=2)):
                ro, co = r // stride, cw // stride
                if ro == 0 or co == 0:
                    continue  # every query of these windows is cropped away
                g = g.reshape(b, nr, r, nc, cw, c3).permute(0, 1, 3, 2, 4, 5)
                g = g.reshape(b * nr * nc, r * cw, 3, heads, -1)
                q, k, v = g.permute(2, 0, 3, 1, 4).unbind(0)  # [Bw, heads, r*cw, d]
                if self.q_pool is not None:
                    q_map = q.transpose(1, 2).reshape(b * nr * nc, r, cw, -1)
                    q = _pool_bhwc(q_map, self.q_pool)
                    q = q.reshape(b * nr * nc, ro * co, heads, -1).transpose(1, 2)
                num_pad = ws * ws - r * cw
                mask = None
                if num_pad:
                    bw = k.shape[0]
                    k = torch.cat((k, k_pad.to(k.dtype).expand(bw, -1, -1, -1)), dim=2)
                    v = torch.cat((v, v_pad.to(v.dtype).expand(bw, -1, -1, -1)), dim=2)
                    mask = k.new_zeros(1, 1, 1, r * cw + 1)
                    mask[..., -1] = math.log(num_pad)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                out = out.transpose(1, 2).reshape(b, nr, nc, ro, co, c)
                cols.append(out.permute(0, 1, 3, 2, 4, 5).reshape(b, nr * ro, nc * co, c))
            if cols:
                rows.append(torch.cat(cols, dim=2) if len(cols) > 1 else cols[0])
        return torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]

    def forward_windowed(
        self, x: torch.Tensor, window_size: int, out_window_size: int, out_hw: tuple[int, int]
    ) -> torch.Tensor:
        """Windowed attention of the unpadded map ``[B, H, W, dim]`` -> ``[B, H', W', dim_out]``
        (``out_hw`` = (H', W'); ``out_window_size`` = window after query pooling).

        Equal to zero-padding ``x`` to whole windows, :func:`window_partition`, :meth:`forward`
        and :func:`window_unpartition`, but cheaper: the projections run on the real tokens
        only, padded tokens are never materialised (:meth:`_attend_padded_windows`) and the
        output projection runs after cropping. At 256 px this skips about two thirds of the
        stage-3/4 projections and the padded attention inputs (three times the real tokens).
        """
        h, w = x.shape[1:3]
        if h % window_size or w % window_size:
            return self.proj(self._attend_padded_windows(self.qkv(x), window_size))
        # No padding: partition the (3x narrower) input rather than the projections.
        out = self._attend(self.qkv(window_partition(x, window_size)[0]))
        oh, ow = out_hw
        pad_hw = (
            oh + (out_window_size - oh % out_window_size) % out_window_size,
            ow + (out_window_size - ow % out_window_size) % out_window_size,
        )
        return self.proj(window_unpartition(out, out_window_size, pad_hw, out_hw))


class MultiScaleBlock(nn.Module):
    """Pre-norm Hiera block: (windowed) attention with optional q-pooling, then a GELU MLP.

    When ``dim != dim_out`` the residual is projected (``proj``) and pooled like the queries.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        q_stride: tuple[int, int] | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool: nn.Module | None = None
        if q_stride is not None:
            self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(
            dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=act_layer
        )
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H', W', dim_out]``."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = _pool_bhwc(shortcut, self.pool)

        if self.window_size > 0:
            # Queries pooled inside every window: windows shrink, the output grid follows the
            # (pooled) shortcut, padded again to a multiple of the smaller window.
            out_ws = self.window_size
            if self.q_stride is not None:
                out_ws = self.window_size // self.q_stride[0]
            out_hw = (shortcut.shape[1], shortcut.shape[2])
            x = self.attn.forward_windowed(x, self.window_size, out_ws, out_hw)
        else:
            x = self.attn(x)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Hiera(nn.Module):
    """Hiera image trunk: ``[B, 3, H, W]`` -> 4 maps at strides 4, 8, 16, 32.

    Stage ``s`` (1-based) has ``stages[s-1]`` blocks; the first block of stages 2..q_pool+1 pools
    its queries by ``q_stride`` and multiplies width by ``dim_mul`` and heads by ``head_mul``.
    Window sizes come from ``window_spec``, lagging by one block at stage changes (the first
    block of a stage still uses the previous stage's window); ``global_att_blocks`` use global
    attention. ``channel_list`` lists the output widths from the coarsest level to the finest
    (``[8C, 4C, 2C, C]``), the order of the FPN neck's ``backbone_channel_list``.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        drop_path_rate: float = 0.0,
        q_pool: int = 3,
        q_stride: tuple[int, int] = (2, 2),
        stages: tuple[int, ...] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14),
        window_spec: tuple[int, ...] = (8, 4, 14, 7),
        global_att_blocks: tuple[int, ...] = (12, 16, 20),
        return_interm_layers: bool = True,
    ) -> None:
        super().__init__()
        stages = tuple(stages)
        window_spec = tuple(window_spec)
        if len(stages) != len(window_spec):
            raise ValueError(f"stages {stages} and window_spec {window_spec} differ in length")
        q_stride = (int(q_stride[0]), int(q_stride[1]))
        self.window_spec = window_spec
        self.q_stride = q_stride
        depth = sum(stages)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        if not 0 <= q_pool <= len(self.stage_ends) - 1:
            raise ValueError(f"q_pool must be in [0, {len(self.stage_ends) - 1}], got {q_pool}")
        self.q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.return_interm_layers = return_interm_layers
        #: recompute each block's activations in backward instead of keeping them (training
        #: memory: the peak holds one block's activations, not the trunk's); not a parameter
        self.checkpoint_blocks = False
        self.global_att_blocks = tuple(global_att_blocks)
        self.window_pos_embed_bkg_spatial_size = tuple(window_pos_embed_bkg_spatial_size)

        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, embed_dim, *self.window_pos_embed_bkg_spatial_size)
        )
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0])
        )

        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        cur_stage = 1
        self.blocks = nn.ModuleList()
        for i in range(depth):
            dim_out = embed_dim
            # The window is read before the stage counter advances: this is the one-block lag.
            window_size = 0 if i in self.global_att_blocks else window_spec[cur_stage - 1]
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    drop_path=dpr[i],
                    q_stride=q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                )
            )
            embed_dim = dim_out

        ends = self.stage_ends[::-1] if return_interm_layers else [self.stage_ends[-1]]
        self.channel_list = [self._block(i).dim_out for i in ends]

    def _block(self, i: int) -> MultiScaleBlock:
        block = self.blocks[i]
        assert isinstance(block, MultiScaleBlock)
        return block

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """Background embedding resized to the grid plus the tiled window embedding:
        ``[1, H, W, C]``."""
        h, w = hw
        win = self.pos_embed_window.shape[-1]
        if h % win or w % win:
            raise ValueError(
                f"token grid {h}x{w} is not a multiple of the window embedding size {win}; "
                f"use an input size divisible by {4 * win}"
            )
        pos_embed = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        pos_embed = pos_embed + self.pos_embed_window.tile(1, 1, h // win, w // win)
        return pos_embed.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [B, 3, H, W]`` -> ``[B, C_i, H_i, W_i]`` per stage (all 4 with
        ``return_interm_layers``, else only the last)."""
        x = self.patch_embed(x)
        x = x + self._get_pos_embed((x.shape[1], x.shape[2]))
        outputs = []
        last = self.stage_ends[-1]
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for i, blk in enumerate(self.blocks):
            # use_reentrant=False keeps the RNG state, so drop path draws the same masks twice
            x = checkpoint(blk, x, use_reentrant=False) if recompute else blk(x)
            if i == last or (self.return_interm_layers and i in self.stage_ends):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

    def get_num_layers(self) -> int:
        """Number of blocks (layer-wise learning-rate decay depth)."""
        return len(self.blocks)

    def get_layer_id(self, layer_name: str) -> int:
        """Layer index for layer decay: embeddings 0, ``blocks.i`` -> i + 1, others last + 1."""
        num_layers = self.get_num_layers()
        if "rel_pos" in layer_name:
            return num_layers + 1
        if "pos_embed" in layer_name or "patch_embed" in layer_name:
            return 0
        if "blocks" in layer_name:
            return int(layer_name.split("blocks")[1].split(".")[1]) + 1
        return num_layers + 1
