"""Position encodings of SAM 2.1: 2-D sine, random Fourier features, 1-D sine, 2-D axial RoPE.

Names and numerics follow the official modules so that outputs match the reference
implementation to float32 rounding:

* :class:`PositionEmbeddingSine` - DETR-style sine/cosine map used by the FPN neck and the
  memory encoder (no parameters).
* :class:`PositionEmbeddingRandom` - Gaussian random Fourier features used by the prompt encoder
  (one persistent buffer ``positional_encoding_gaussian_matrix``).
* :func:`get_1d_sine_pe` - sine encoding of scalar positions (temporal encoding of object
  pointers).
* :func:`compute_axial_cis` / :func:`apply_rotary_enc` - 2-D axial rotary position encoding used
  by the memory attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine position map of a feature map, independent of its content.

    Half of the ``num_pos_feats`` channels encode the row (y, first), half the column (x); within
    each half channels alternate ``sin, cos`` with geometrically spaced frequencies. With
    ``normalize`` the 1-based coordinates are divided by the side length and scaled to
    ``(0, scale]`` (``scale`` defaults to 2*pi).

    The result depends only on ``(H, W)`` and the device, so it is cached per grid.
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: int | float = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        # Official attribute semantics: the number of features per axis.
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple[int, int, str, bool], torch.Tensor] = {}

    def _axis_encoding(self, n: int, device: torch.device) -> torch.Tensor:
        """Encoding of positions ``1..n`` along one axis: ``[n, num_pos_feats]`` float32."""
        pos = torch.arange(1, n + 1, dtype=torch.float32, device=device)
        if self.normalize:
            pos = pos / (pos[-1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        angles = pos[:, None] / dim_t
        # Even channels take sin, odd channels cos (paired frequencies are equal).
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def _grid_encoding(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``[2 * num_pos_feats, H, W]`` float32 (y channels first, then x)."""
        pos_y = self._axis_encoding(h, device).t()[:, :, None].expand(-1, h, w)
        pos_x = self._axis_encoding(w, device).t()[:, None, :].expand(-1, h, w)
        return torch.cat((pos_y, pos_x), dim=0)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` (only its shape and device are used) -> ``[B, 2*N, H, W]`` float32.

        The batch dimension is an ``expand`` of one cached map (no copy); callers must not write
        into the result in place.
        """
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if torch.compiler.is_compiling():
            # Inside a compiled graph the map is a constant the compiler folds; no Python cache.
            return self._grid_encoding(h, w, x.device)[None].expand(x.shape[0], -1, -1, -1)
        # Tensors made under inference_mode cannot later enter autograd, so keep them apart.
        key = (h, w, str(x.device), torch.is_inference_mode_enabled())
        pos = self._cache.get(key)
        if pos is None:
            pos = self._grid_encoding(h, w, x.device)
            self._cache[key] = pos
        return pos[None].expand(x.shape[0], -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier feature encoding of normalised ``(x, y)`` coordinates.

    ``positional_encoding_gaussian_matrix [2, num_pos_feats]`` ~ ``scale * N(0, 1)`` maps
    coordinates in ``[-1, 1]`` to ``num_pos_feats`` frequencies; output is ``sin || cos``.
    """

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``coords [..., 2]`` in ``[0, 1]`` -> ``[..., 2 * num_pos_feats]``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = (2 * math.pi) * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an ``(H, W)`` grid of cell centres -> ``[2*num_pos_feats, H, W]``."""
        h, w = int(size[0]), int(size[1])
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(
            (x[None, :].expand(h, w), y[:, None].expand(h, w)), dim=-1
        )  # [H, W, 2] as (x, y)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """``coords_input [B, N, 2]`` as (x, y) pixels of an ``image_size=(H, W)`` image ->
        ``[B, N, 2*num_pos_feats]``."""
        # Divide (not multiply by a reciprocal) to match the reference bit for bit.
        coords = torch.stack(
            (coords_input[..., 0] / image_size[1], coords_input[..., 1] / image_size[0]), dim=-1
        )
        return self._pe_encoding(coords.to(torch.float))


def get_1d_sine_pe(pos_inds: torch.Tensor, dim: int, temperature: float = 10000) -> torch.Tensor:
    """Sine encoding of scalar positions: ``pos_inds [...]`` -> ``[..., dim]`` (sin || cos)."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos_inds.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / pe_dim)
    pos_embed = pos_inds.unsqueeze(-1) / dim_t
    return torch.cat([pos_embed.sin(), pos_embed.cos()], dim=-1)


# --------------------------------------------------------------------------------------------
# 2-D axial rotary position encoding (RoPE)
# --------------------------------------------------------------------------------------------


def init_t_xy(end_x: int, end_y: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row index of each token of a row-major ``end_y x end_x`` grid (float32)."""
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    return t_x, t_y


def compute_axial_cis(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Unit complex rotations for 2-D axial RoPE: ``[end_x * end_y, dim // 2]`` complex64.

    The first ``dim // 4`` entries rotate by the token's column, the last ``dim // 4`` by its
    row, each with frequencies ``1 / theta ** (4k / dim)``.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    t_x, t_y = init_t_xy(end_x, end_y)
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def _rotate(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x [..., N, D]`` by ``freqs_cis [M, D/2]``.

    ``N`` must be a multiple of ``M`` (several frames of the same grid share the rotations; the
    table is broadcast, never materialised). Computed as a complex product in float32 - on CPU
    about 3x faster than the equivalent real arithmetic - and returned in float32.
    """
    m = freqs_cis.shape[0]
    n = x.shape[-2]
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-2], n // m, m, -1, 2))
    return torch.view_as_real(xc * freqs_cis).reshape(x.shape)


def apply_rotary_enc(
    xq: torch.Tensor,
    xk: torch.Tensor,
    freqs_cis: torch.Tensor,
    repeat_freqs_k: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply axial RoPE to queries ``xq [B, h, Nq, D]`` and keys ``xk [B, h, Nk, D]``.

    ``freqs_cis [Nq, D/2]`` (complex, from :func:`compute_axial_cis`) must match the query grid.
    With ``repeat_freqs_k`` the keys are ``Nk / Nq`` stacked copies of that grid (several memory
    frames) and share its rotations. The rotation is computed in float32 (also under autocast)
    and cast back to the input dtypes.
    """
    if freqs_cis.shape != (xq.shape[-2], xq.shape[-1] // 2):
        raise ValueError(
            f"RoPE table of shape {tuple(freqs_cis.shape)} does not fit queries {tuple(xq.shape)}"
        )
    freqs_cis = freqs_cis.to(xq.device)
    xq_out = _rotate(xq, freqs_cis).type_as(xq)
    if xk.shape[-2] == 0:
        return xq_out, xk
    if repeat_freqs_k:
        if xk.shape[-2] % xq.shape[-2] != 0:
            raise ValueError(
                f"rope_k_repeat needs a key count ({xk.shape[-2]}) that is a multiple of the "
                f"query count ({xq.shape[-2]})"
            )
    elif xk.shape[-2] != xq.shape[-2]:
        raise ValueError("keys and queries differ in length; set rope_k_repeat")
    xk_out = _rotate(xk, freqs_cis).type_as(xk)
    return xq_out, xk_out
