"""Memory attention of SAM 2.1: conditions current-frame features on the memory bank.

Each layer does RoPE self-attention over the current frame's tokens, RoPE cross-attention to the
memories (spatial memories of past frames followed by object-pointer tokens, which get no RoPE)
and a feed-forward block, all pre-norm. Inputs and outputs are sequence-first ``[N, B, C]``.
"""

from __future__ import annotations

import copy
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from sam2_core.model.nn.common import Attention, activation_module
from sam2_core.model.nn.position_encoding import apply_rotary_enc, compute_axial_cis

_MASK_LEVELS = 1 << 16  # drop decisions are made on 16-bit random integers


def _keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean keep mask of ``shape`` with keep probability ``1 - p`` (to 1 / 65536).

    CPU ``rand``/``bernoulli_`` draw one 32-bit Mersenne-Twister number per element, which
    costs more than the attention maths around it. ``random_()`` on int64 fills 63 random
    bits per draw pair, so three independent uniform 16-bit lanes (bits 0..47) are cut from
    each word: a third of the generator work for the same mask.
    """
    n = math.prod(shape)
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=device).random_()
    lanes = words.view(torch.int16).view(-1, 4)
    # The three low lanes hold bits 0..47 (the top lane carries the always-zero bit 63).
    lanes = lanes[:, :3] if sys.byteorder == "little" else lanes[:, 1:]
    # int16 lanes are uniform on [-32768, 32767]: P(lane < t) = (t + 32768) / 65536 = p.
    threshold = round(p * _MASK_LEVELS) - _MASK_LEVELS // 2
    return (lanes >= threshold).reshape(-1)[:n].view(shape)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with keep probability ``1 - p``: ``F.dropout`` on accelerators, the
    cheaper :func:`_keep_mask` on CPU.

    The scale ``1 / (1 - p)`` is folded into the mask so the autograd graph holds one saved
    tensor, as with the native op.
    """
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if p >= 1.0:
        return x * 0.0
    keep = _keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """Scaled dot-product attention ``[B, h, Nq, d] x [B, h, Nk, d] -> [B, h, Nq, d]``.

    Without dropout (or on CUDA) this is SDPA; with dropout on CPU SDPA falls back to the math
    path with a ``bernoulli_`` mask anyway, so the same math is spelled out here with the cheaper
    :func:`_dropout` mask.
    """
    if p <= 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    scale = 1.0 / math.sqrt(q.shape[-1])
    attn = torch.softmax(torch.matmul(q * scale, k.transpose(-2, -1)), dim=-1)
    return torch.matmul(_dropout(attn, p, True), v)


class RoPEAttention(Attention):
    """:class:`Attention` with 2-D axial rotary position encoding of queries and keys.

    The rotation table is built for a ``feat_sizes = (W, H)`` token grid and rebuilt for a square
    grid of side ``sqrt(Nq)`` when the query count differs. With ``rope_k_repeat`` the keys are
    several frames of the query grid (memory attention) and share its rotations; the last
    ``num_k_exclude_rope`` keys (object pointers) are left unrotated.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        *,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (32, 32),
    ) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, dropout, kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.head_dim = self.internal_dim // self.num_heads
        if self.head_dim % 4 != 0:
            raise ValueError(f"RoPE needs a head dim divisible by 4, got {self.head_dim}")
        # Plain attribute, not a buffer: the official state dict has no RoPE table.
        self.freqs_cis = self.compute_cis(end_x=int(feat_sizes[0]), end_y=int(feat_sizes[1]))

    def compute_cis(self, *, end_x: int, end_y: int) -> torch.Tensor:
        """Rotation table ``[end_x * end_y, head_dim / 2]`` (complex64)."""
        return compute_axial_cis(self.head_dim, end_x, end_y, theta=self.rope_theta)

    def _table_for(self, n: int, device: torch.device) -> torch.Tensor:
        """Rotation table for ``n`` query tokens on ``device``, rebuilt if the grid changed."""
        if self.freqs_cis.shape[0] != n:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(
                    f"RoPE grid of {n} tokens is not square; cannot infer its layout "
                    f"(table built for {self.freqs_cis.shape[0]} tokens)"
                )
            self.freqs_cis = self.compute_cis(end_x=side, end_y=side)
        if self.freqs_cis.device != device:
            self.freqs_cis = self.freqs_cis.to(device)
        return self.freqs_cis

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        """``q [B, Nq, C]``, ``k, v [B, Nk, kv_in_dim]`` -> ``[B, Nq, C]``."""
        qh = self._split_heads(self.q_proj(q))
        kh = self._split_heads(self.k_proj(k))
        vh = self._split_heads(self.v_proj(v))
        if qh.shape[-2] != kh.shape[-2] and not self.rope_k_repeat:
            raise ValueError(
                f"{qh.shape[-2]} queries but {kh.shape[-2]} keys: set rope_k_repeat=True"
            )
        freqs = self._table_for(qh.shape[-2], qh.device)
        num_k_rope = kh.shape[-2] - num_k_exclude_rope
        if num_k_exclude_rope > 0:
            # Rotate the frame keys in place (kh is a fresh projection): no copy of the keys.
            qh, k_rope = apply_rotary_enc(
                qh, kh[:, :, :num_k_rope], freqs, repeat_freqs_k=self.rope_k_repeat
            )
            kh[:, :, :num_k_rope] = k_rope
        else:
            qh, kh = apply_rotary_enc(qh, kh, freqs, repeat_freqs_k=self.rope_k_repeat)
        p = self.dropout_p if self.training else 0.0
        out = _attention(qh, kh, vh, p)
        return self.out_proj(self._merge_heads(out))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: self-attention, cross-attention to memories, feed-forward (batch-first).

    ``pos_enc_at_attn`` adds the query position to the self-attention q/k;
    ``pos_enc_at_cross_attn_queries/keys`` add positions to the cross-attention q / k.
    """

    def __init__(
        self,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: nn.Module,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation_str = activation
        self.activation = activation_module(activation)()
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _drop(self, module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        """``module``'s dropout with the cheaper mask of :func:`_dropout`."""
        return _dropout(x, module.p, self.training and module.training)

    def _forward_sa(self, tgt: torch.Tensor, query_pos: torch.Tensor | None) -> torch.Tensor:
        tgt2 = self.norm1(tgt)
        qk = tgt2 + query_pos if self.pos_enc_at_attn and query_pos is not None else tgt2
        return tgt + self._drop(self.dropout1, self.self_attn(qk, qk, tgt2))

    def _forward_ca(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor | None,
        pos: torch.Tensor | None,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        kwds = {}
        if num_k_exclude_rope > 0:
            if not isinstance(self.cross_attn_image, RoPEAttention):
                raise TypeError("num_k_exclude_rope needs a RoPEAttention cross-attention")
            kwds = {"num_k_exclude_rope": num_k_exclude_rope}
        tgt2 = self.norm2(tgt)
        q = (
            tgt2 + query_pos
            if self.pos_enc_at_cross_attn_queries and query_pos is not None
            else tgt2
        )
        k = memory + pos if self.pos_enc_at_cross_attn_keys and pos is not None else memory
        return tgt + self._drop(self.dropout2, self.cross_attn_image(q, k, memory, **kwds))

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
    ) -> torch.Tensor:
        """``tgt [B, N, d_model]``, ``memory/pos [B, M, kv_dim]`` -> ``[B, N, d_model]``."""
        tgt = self._forward_sa(tgt, query_pos)
        tgt = self._forward_ca(tgt, memory, query_pos, pos, num_k_exclude_rope)
        hidden = self._drop(self.dropout, self.activation(self.linear1(self.norm3(tgt))))
        return tgt + self._drop(self.dropout3, self.linear2(hidden))


class MemoryAttention(nn.Module):
    """Stack of ``num_layers`` copies of ``layer`` plus a final LayerNorm.

    ``batch_first`` refers to the layers: inputs/outputs of :meth:`forward` are sequence-first
    and transposed around the layers when it is True.
    """

    def __init__(
        self,
        d_model: int,
        pos_enc_at_input: bool,
        layer: nn.Module,
        num_layers: int,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(
        self,
        curr: torch.Tensor | list[torch.Tensor],
        memory: torch.Tensor,
        curr_pos: torch.Tensor | list[torch.Tensor] | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """Condition the current frame on the memory bank.

        Args:
            curr: current-frame tokens ``[HW, B, d_model]`` (or a one-element list of it).
            memory: memory tokens ``[M, B, kv_dim]``; the last ``num_obj_ptr_tokens`` are object
                pointers (no RoPE), the rest whole frames of the current grid.
            curr_pos: position encoding of ``curr`` (same shape), optional.
            memory_pos: position encoding of ``memory`` (same shape), optional.
            num_obj_ptr_tokens: number of trailing pointer tokens in ``memory``.

        Returns:
            ``[HW, B, d_model]``.
        """
        if isinstance(curr, list):
            if not isinstance(curr_pos, list) or len(curr) != 1 or len(curr_pos) != 1:
                raise ValueError("list inputs must be one-element lists for curr and curr_pos")
            curr, curr_pos = curr[0], curr_pos[0]
        assert not isinstance(curr_pos, list)
        if curr.shape[1] != memory.shape[1]:
            raise ValueError(
                f"batch size differs: curr {tuple(curr.shape)} vs memory {tuple(memory.shape)}"
            )
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        if self.batch_first:
            # One contiguous copy each here: transposed views would propagate their strides
            # through every elementwise op and make each LayerNorm / projection copy again.
            output = output.transpose(0, 1).contiguous()
            memory = memory.transpose(0, 1).contiguous()
            curr_pos = curr_pos.transpose(0, 1).contiguous() if curr_pos is not None else None
            if memory_pos is not None:
                memory_pos = memory_pos.transpose(0, 1).contiguous()
        for layer in self.layers:
            kwds = {}
            if isinstance(getattr(layer, "cross_attn_image", None), RoPEAttention):
                kwds = {"num_k_exclude_rope": num_obj_ptr_tokens}
            output = layer(output, memory, pos=memory_pos, query_pos=curr_pos, **kwds)
        normed = self.norm(output)
        return normed.transpose(0, 1) if self.batch_first else normed
