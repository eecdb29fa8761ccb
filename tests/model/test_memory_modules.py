"""State-dict keys/shapes of the image encoder, memory attention and memory encoder at the four
released SAM 2.1 sizes, plus shape and behaviour tests of the memory modules and encodings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sam2_core.model.nn.hiera import Hiera, window_partition, window_unpartition
from sam2_core.model.nn.image_encoder import FpnNeck, ImageEncoder
from sam2_core.model.nn.memory_attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention
from sam2_core.model.nn.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2_core.model.nn.position_encoding import (
    PositionEmbeddingRandom,
    PositionEmbeddingSine,
    apply_rotary_enc,
    compute_axial_cis,
)

# Trunk/neck sizes of configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml (notes section 2.1).
SIZES: dict[str, dict[str, object]] = {
    "sam2.1_hiera_t": dict(
        embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7), channels=[768, 384, 192, 96],
        trunk_params=26_849_472, neck_params=369_664,
    ),
    "sam2.1_hiera_s": dict(
        embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7), channels=[768, 384, 192, 96],
        trunk_params=33_947_328, neck_params=369_664,
    ),
    "sam2.1_hiera_b+": dict(
        embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14), channels=[896, 448, 224, 112],
        trunk_params=68_675_712, neck_params=431_104,
    ),
    "sam2.1_hiera_l": dict(
        embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7),
        channels=[1152, 576, 288, 144], trunk_params=212_149_296, neck_params=553_984,
    ),
}  # fmt: skip
MINE = ("image_encoder.", "memory_attention.", "memory_encoder.")


def build_image_encoder(name: str) -> ImageEncoder:
    cfg = dict(SIZES[name])
    channels = cfg.pop("channels")
    cfg.pop("trunk_params"), cfg.pop("neck_params")
    trunk = Hiera(**cfg)  # type: ignore[arg-type]
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(256),
        d_model=256,
        backbone_channel_list=channels,  # type: ignore[arg-type]
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1)


def build_memory_attention(d_model: int = 256, mem_dim: int = 64, side: int = 64, layers: int = 4):
    def rope(**kw: object) -> RoPEAttention:
        return RoPEAttention(d_model, 1, 1, 0.1, feat_sizes=(side, side), **kw)  # type: ignore[arg-type]

    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=mem_dim),
        d_model=d_model,
        dim_feedforward=8 * d_model,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=rope(),
    )
    return MemoryAttention(d_model=d_model, pos_enc_at_input=True, layer=layer, num_layers=layers)


def build_memory_encoder(in_dim: int = 256, out_dim: int = 64) -> MemoryEncoder:
    return MemoryEncoder(
        out_dim=out_dim,
        mask_downsampler=MaskDownSampler(embed_dim=in_dim, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=in_dim, kernel_size=7, padding=3), num_layers=2),
        position_encoding=PositionEmbeddingSine(out_dim),
        in_dim=in_dim,
    )


def _read_tsv(path: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


@pytest.mark.parametrize("name", list(SIZES))
def test_keys_and_shapes_match_official(golden: Path, name: str) -> None:
    expected = {
        k: v for k, v in _read_tsv(golden / "keys" / f"{name}.tsv").items() if k.startswith(MINE)
    }
    # The meta device skips allocation and init: building the 224M-parameter model is instant.
    with torch.device("meta"):
        modules = {
            "image_encoder.": build_image_encoder(name),
            "memory_attention.": build_memory_attention(),
            "memory_encoder.": build_memory_encoder(),
        }
    got = {
        prefix + k: tuple(v.shape)
        for prefix, mod in modules.items()
        for k, v in mod.state_dict().items()
    }
    assert sorted(set(got) - set(expected)) == [], "unexpected keys"
    assert sorted(set(expected) - set(got)) == [], "missing keys"
    assert got == expected
    # Same order as the official state dict (within each submodule).
    assert list(got) == [k for k in expected if k in got]
    ie = modules["image_encoder."]
    assert sum(p.numel() for p in ie.trunk.parameters()) == SIZES[name]["trunk_params"]
    assert sum(p.numel() for p in ie.neck.parameters()) == SIZES[name]["neck_params"]
    assert sum(p.numel() for p in modules["memory_attention."].parameters()) == 5_922_304
    assert sum(p.numel() for p in modules["memory_encoder."].parameters()) == 1_384_608


def test_image_encoder_output_shapes_and_strides() -> None:
    torch.manual_seed(0)
    trunk = Hiera(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,))
    neck = FpnNeck(PositionEmbeddingSine(32), 32, trunk.channel_list, fpn_top_down_levels=[2, 3])
    enc = ImageEncoder(trunk, neck, scalp=1).eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 256, 256))
    assert [tuple(x.shape) for x in out["backbone_fpn"]] == [
        (2, 32, 64, 64), (2, 32, 32, 32), (2, 32, 16, 16),
    ]  # fmt: skip
    assert out["vision_features"] is out["backbone_fpn"][-1]
    assert [tuple(x.shape) for x in out["vision_pos_enc"]] == [
        (2, 32, 64, 64), (2, 32, 32, 32), (2, 32, 16, 16),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="multiple of the window"):
        trunk(torch.randn(1, 3, 80, 80))
    with pytest.raises(ValueError, match="channel_list"):
        ImageEncoder(trunk, FpnNeck(PositionEmbeddingSine(32), 32, [1, 2, 3, 4]))


def test_window_partition_roundtrip_with_padding() -> None:
    x = torch.randn(2, 10, 7, 3)
    windows, pad_hw = window_partition(x, 4)
    assert pad_hw == (12, 8) and windows.shape == (2 * 3 * 2, 4, 4, 3)
    assert torch.equal(window_unpartition(windows, 4, pad_hw, (10, 7)), x)
    # Window (0, 1) of sample 0 holds rows 0..3, cols 4..6 then one zero column of padding.
    assert torch.equal(windows[1, :, :3], x[0, :4, 4:7])
    assert torch.count_nonzero(windows[1, :, 3]) == 0


def test_trunk_backward_and_drop_path() -> None:
    torch.manual_seed(0)
    trunk = Hiera(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,))
    trunk_dp = Hiera(
        embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,), drop_path_rate=0.5
    )
    trunk_dp.load_state_dict(trunk.state_dict())
    x = torch.randn(2, 3, 64, 64)
    out = trunk(x)
    sum(o.sum() for o in out).backward()
    assert trunk.pos_embed.grad is not None and trunk.pos_embed_window.grad is not None
    trunk_dp.eval()  # drop path is inactive in eval
    with torch.no_grad():
        assert torch.allclose(trunk.eval()(x)[-1], trunk_dp(x)[-1])


def test_memory_attention_shapes_tiny_and_recompute_grid() -> None:
    torch.manual_seed(0)
    attn = build_memory_attention(d_model=64, mem_dim=16, side=8, layers=2).eval()
    b = 3
    for side in (8, 5):  # 5x5 differs from feat_sizes: the RoPE tables are rebuilt
        n = side * side
        curr, curr_pos = torch.randn(n, b, 64), torch.randn(n, b, 64)
        num_ptr = 8
        memory = torch.randn(2 * n + num_ptr, b, 16)
        memory_pos = torch.randn_like(memory)
        with torch.no_grad():
            out = attn(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=num_ptr)
        assert out.shape == (n, b, 64)
        assert torch.isfinite(out).all()
        layer = attn.layers[0]
        assert isinstance(layer, MemoryAttentionLayer)
        assert isinstance(layer.self_attn, RoPEAttention)
        assert layer.self_attn.freqs_cis.shape == (n, 32)
    with pytest.raises(ValueError, match="not square"):
        attn(torch.randn(12, 1, 64), torch.randn(24, 1, 16), torch.randn(12, 1, 64),
             torch.randn(24, 1, 16))  # fmt: skip
    with pytest.raises(ValueError, match="batch size"):
        attn(torch.randn(64, 2, 64), torch.randn(64, 1, 16), None, torch.randn(64, 1, 16))


def test_rope_recomputed_table_equals_fresh_table() -> None:
    attn = RoPEAttention(64, 2, feat_sizes=(8, 8))
    q = torch.randn(1, 36, 64)
    attn(q, q, q)
    assert torch.equal(attn.freqs_cis, compute_axial_cis(32, 6, 6))


def test_rope_excluded_keys_are_not_rotated_and_train_mode_backprops() -> None:
    torch.manual_seed(0)
    attn = RoPEAttention(32, 2, kv_in_dim=8, rope_k_repeat=True, feat_sizes=(4, 4)).eval()
    q = torch.randn(2, 16, 32)
    k = torch.randn(2, 2 * 16 + 3, 8)  # two frames of the 4x4 grid + 3 pointer tokens
    with torch.no_grad():
        out = attn(q, k, k, num_k_exclude_rope=3)
        # Manual reference: rotate the 32 frame keys (table tiled twice), keep the 3 pointers.
        qh, kh, vh = (attn._split_heads(p(x)) for p, x in
                      ((attn.q_proj, q), (attn.k_proj, k), (attn.v_proj, k)))  # fmt: skip
        freqs = compute_axial_cis(16, 4, 4)
        q_rot = apply_rotary_enc(qh, kh[:, :, :0], freqs)[0]
        k_rot = torch.cat(
            [apply_rotary_enc(kh[:, :, i : i + 16], kh[:, :, :0], freqs)[0] for i in (0, 16)]
            + [kh[:, :, 32:]],
            dim=2,
        )
        ref = torch.softmax(q_rot @ k_rot.transpose(-1, -2) / 4.0, dim=-1) @ vh
        ref = attn.out_proj(attn._merge_heads(ref))
    torch.testing.assert_close(out, ref)
    # Complex-arithmetic formulation of the rotation (as in the reference implementation).
    x = torch.randn(1, 1, 16, 8)
    cis = compute_axial_cis(8, 4, 4)
    expected = torch.view_as_real(torch.view_as_complex(x.reshape(1, 1, 16, 4, 2)) * cis)
    rotated, _ = apply_rotary_enc(x, x[:, :, :0], cis)
    torch.testing.assert_close(rotated, expected.flatten(3))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    # Training mode (dropout) backpropagates into the keys.
    attn.train()
    k.requires_grad_(True)
    attn(q, k, k, num_k_exclude_rope=3).sum().backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()
    with pytest.raises(ValueError, match="multiple"):
        apply_rotary_enc(x, torch.randn(1, 1, 20, 8), cis, repeat_freqs_k=True)
    with pytest.raises(ValueError, match="rope_k_repeat"):
        RoPEAttention(32, 1, feat_sizes=(4, 4))(q, torch.randn(2, 32, 32), torch.randn(2, 32, 32))


def test_memory_encoder_shapes_tiny_and_sigmoid_path() -> None:
    torch.manual_seed(0)
    enc = build_memory_encoder(in_dim=64, out_dim=16).eval()
    pix = torch.randn(2, 64, 8, 8)
    logits = torch.randn(2, 1, 128, 128) * 5
    with torch.no_grad():
        out = enc(pix, logits)
        out_skip = enc(pix, torch.sigmoid(logits), skip_mask_sigmoid=True)
    assert out["vision_features"].shape == (2, 16, 8, 8)
    assert len(out["vision_pos_enc"]) == 1 and out["vision_pos_enc"][0].shape == (2, 16, 8, 8)
    torch.testing.assert_close(out["vision_features"], out_skip["vision_features"])
    ds = enc.mask_downsampler
    assert isinstance(ds, MaskDownSampler)
    convs = [m for m in ds.encoder if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 16, 64, 256, 64]
    # Identity out_proj when widths agree; Fuser input projection is optional.
    assert isinstance(build_memory_encoder(in_dim=32, out_dim=32).out_proj, nn.Identity)
    fuser = Fuser(CXBlock(8), 1, dim=8, input_projection=True)
    assert isinstance(fuser.proj, nn.Conv2d) and fuser(torch.randn(1, 8, 5, 5)).shape == (
        1,
        8,
        5,
        5,
    )
    with pytest.raises(ValueError, match="power"):
        MaskDownSampler(stride=3, total_stride=16)


def test_sine_and_random_position_encodings() -> None:
    pe = PositionEmbeddingSine(16)
    x = torch.zeros(3, 5, 4, 6)
    pos = pe(x)
    assert pos.shape == (3, 16, 4, 6) and pos.dtype == torch.float32
    # First half encodes rows (constant along x), second half columns (constant along y).
    assert torch.equal(pos[:, :8], pos[:, :8, :, :1].expand_as(pos[:, :8]))
    assert torch.equal(pos[:, 8:], pos[:, 8:, :1, :].expand_as(pos[:, 8:]))
    # Channel 0 is sin(2*pi*(i+1)/(H+eps)): the last row is ~sin(2*pi) = 0.
    assert abs(pos[0, 0, -1, 0].item()) < 1e-4
    with torch.inference_mode():
        pe(x)  # cached separately from the autograd-capable map
    assert (pos * torch.ones(1, requires_grad=True)).requires_grad
    with pytest.raises(ValueError):
        PositionEmbeddingSine(15)

    torch.manual_seed(0)
    rnd = PositionEmbeddingRandom(8)
    assert rnd.state_dict()["positional_encoding_gaussian_matrix"].shape == (2, 8)
    dense = rnd((4, 6))
    assert dense.shape == (16, 4, 6)
    # A point at a cell centre gets the dense encoding of that cell.
    pt = torch.tensor([[[2.5, 1.5]]])  # x=2.5, y=1.5 pixels of a 4x6 image
    sparse = rnd.forward_with_coords(pt, (4, 6))
    torch.testing.assert_close(sparse[0, 0], dense[:, 1, 2])


def test_modules_run_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    trunk = Hiera(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,))
    neck = FpnNeck(PositionEmbeddingSine(32), 32, trunk.channel_list, fpn_top_down_levels=[2, 3])
    enc = ImageEncoder(trunk, neck, scalp=1).eval()
    attn = build_memory_attention(d_model=32, mem_dim=16, side=4, layers=1).eval()
    menc = build_memory_encoder(in_dim=32, out_dim=16).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(torch.randn(1, 3, 64, 64))
        feats = out["vision_features"]
        mem = menc(feats, torch.randn(1, 1, 64, 64))
        tokens = feats.flatten(2).permute(2, 0, 1)
        pos = out["vision_pos_enc"][-1].flatten(2).permute(2, 0, 1)
        m = mem["vision_features"].flatten(2).permute(2, 0, 1)
        y = attn(tokens, m, pos, mem["vision_pos_enc"][0].flatten(2).permute(2, 0, 1))
    assert y.shape == (16, 1, 32) and torch.isfinite(y.float()).all()


@pytest.mark.parametrize(
    ("hw", "window", "pool"),
    [((16, 16), 14, False), ((16, 16), 14, True), ((9, 13), 4, False), ((9, 13), 4, True),
     ((7, 5), 8, False), ((12, 12), 6, True)],
)  # fmt: skip
def test_padded_window_attention_equals_zero_padding(
    hw: tuple[int, int], window: int, pool: bool
) -> None:
    """The bias-token windowed attention equals the reference's zero-pad / partition / attend /
    unpartition / crop, in values and in every gradient (input and parameters)."""
    from sam2_core.model.nn.hiera import MultiScaleAttention

    torch.manual_seed(0)
    q_pool = nn.MaxPool2d(2, 2) if pool else None
    attn = MultiScaleAttention(8, 16, num_heads=2, q_pool=q_pool).double()
    x = torch.randn(2, *hw, 8, dtype=torch.float64, requires_grad=True)
    stride = 2 if pool else 1
    out_hw = (hw[0] // stride, hw[1] // stride)
    out_ws = window // stride

    def reference(inp: torch.Tensor) -> torch.Tensor:
        windows, pad_hw = window_partition(inp, window)
        out = attn(windows)  # the plain module on whole zero-padded windows
        out_pad = (pad_hw[0] // stride, pad_hw[1] // stride)
        return window_unpartition(out, out_ws, out_pad, out_hw)

    ref = reference(x)
    got = attn.forward_windowed(x, window, out_ws, out_hw)
    assert got.shape == ref.shape == (2, *out_hw, 16)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * w).sum(), [x, *attn.parameters()])
    grads_got = torch.autograd.grad((got * w).sum(), [x, *attn.parameters()])
    for a, b in zip(grads_got, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_cpu_dropout_mask_rate_independence_and_seeding() -> None:
    from sam2_core.model.nn.memory_attention import _dropout, _keep_mask

    torch.manual_seed(0)
    shape = torch.Size([3, 257, 401])  # not a multiple of 3 lanes
    keep = _keep_mask(shape, 0.1, torch.device("cpu"))
    assert keep.shape == shape and keep.dtype == torch.bool
    flat = keep.reshape(-1).double()
    assert abs(float(flat.mean()) - 0.9) < 0.003  # 309k draws: 5 standard errors
    # Neighbouring elements come from lanes of one 64-bit word: they must be uncorrelated.
    for lag in (1, 2, 3, 4):
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1]
        assert abs(float(corr)) < 0.01, lag
    # Every lane position is unbiased (the top lane of each word, bit 63 fixed, is not used).
    assert all(abs(float(flat[i::3].mean()) - 0.9) < 0.005 for i in range(3))
    torch.manual_seed(0)
    assert torch.equal(_keep_mask(shape, 0.1, torch.device("cpu")), keep)
    # Inverted dropout: survivors scaled by 1 / (1 - p), expectation kept.
    x = torch.ones(200_000)
    y = _dropout(x, 0.25, True)
    assert set(torch.unique(y).tolist()) <= {0.0, float(torch.tensor(1.0 / 0.75))}
    assert abs(float(y.mean()) - 1.0) < 0.01
    assert _dropout(x, 0.25, False) is x and torch.equal(_dropout(x, 1.0, True), x * 0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_window_attention_on_cuda(dtype: torch.dtype) -> None:
    """The bias-token attention on CUDA kernels (its additive mask disables flash attention
    there; the efficient or math kernel must take it) agrees with the float64 CPU result."""
    from sam2_core.model.nn.hiera import MultiScaleAttention

    torch.manual_seed(0)
    attn = MultiScaleAttention(64, 64, num_heads=2).double()
    x = torch.randn(2, 16, 16, 64, dtype=torch.float64)
    ref = attn.forward_windowed(x, 14, 14, (16, 16))
    gpu = attn.to("cuda", dtype)
    got = gpu.forward_windowed(x.to("cuda", dtype), 14, 14, (16, 16)).double().cpu()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
