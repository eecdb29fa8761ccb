"""Golden parity of the image encoder, memory encoder and memory attention (tiny SAM 2.1).

References are outputs of Meta's official implementation on the tiny config
(``../shared/golden/tiny``, README sections 1-5): fp32, CPU. The modules are built here directly
from the tiny sizes (the Hydra build is tested elsewhere) and load the ``image_encoder.*``,
``memory_encoder.*`` and ``memory_attention.*`` tensors of the golden state dict strictly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sam2_core.model.nn.hiera import Hiera, MultiScaleBlock
from sam2_core.model.nn.image_encoder import FpnNeck, ImageEncoder
from sam2_core.model.nn.memory_attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention
from sam2_core.model.nn.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2_core.model.nn.position_encoding import PositionEmbeddingSine, get_1d_sine_pe

RTOL, ATOL, MAX_ABS = 1e-4, 1e-5, 1e-4
NUM_MASKMEM = 7
MEM_DIM = 16  # tiny memory width
D_MODEL = 64  # tiny hidden width


def build_tiny_image_encoder() -> ImageEncoder:
    trunk = Hiera(
        embed_dim=16,
        num_heads=1,
        stages=(1, 2, 3, 2),
        global_att_blocks=(5,),
        window_spec=(8, 4, 6, 3),
        window_pos_embed_bkg_spatial_size=(7, 7),
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(64),
        d_model=64,
        backbone_channel_list=[128, 64, 32, 16],
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1)


def build_tiny_memory_encoder() -> MemoryEncoder:
    return MemoryEncoder(
        out_dim=MEM_DIM,
        mask_downsampler=MaskDownSampler(embed_dim=64, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=64, kernel_size=7, padding=3, layer_scale_init_value=1e-6), 2),
        position_encoding=PositionEmbeddingSine(MEM_DIM),
        in_dim=64,
    )


def build_tiny_memory_attention() -> MemoryAttention:
    def rope(**kw: object) -> RoPEAttention:
        return RoPEAttention(64, 1, 1, 0.1, rope_theta=10000.0, feat_sizes=(8, 8), **kw)  # type: ignore[arg-type]

    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=MEM_DIM),
        d_model=64,
        dim_feedforward=256,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=rope(),
    )
    return MemoryAttention(d_model=64, pos_enc_at_input=True, layer=layer, num_layers=2)


def _sub_state(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    err = (actual - expected).abs().max().item()
    assert err <= MAX_ABS, f"{name}: max abs err {err:.3g}"
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=name)


@pytest.fixture(scope="module")
def tiny(golden: Path) -> dict[str, object]:
    torch.manual_seed(0)
    sd = load_file(str(golden / "tiny" / "state_dict.safetensors"))
    modules: dict[str, torch.nn.Module] = {
        "image_encoder": build_tiny_image_encoder(),
        "memory_encoder": build_tiny_memory_encoder(),
        "memory_attention": build_tiny_memory_attention(),
    }
    for prefix, mod in modules.items():
        mod.load_state_dict(_sub_state(sd, prefix + "."), strict=True)
        mod.eval()
    return {"sd": sd, **modules}


@pytest.fixture(scope="module")
def image_ref(golden: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden / "tiny" / "image_encoder.safetensors"))


@pytest.fixture(scope="module")
def video_ref(golden: Path) -> dict[str, torch.Tensor]:
    return load_file(str(golden / "tiny" / "video_track.safetensors"))


def test_tiny_block_layout_matches_reference_table() -> None:
    """Window sizes (stage lag, global blocks), q-pool blocks and widths of the tiny trunk."""
    trunk = build_tiny_image_encoder().trunk
    assert isinstance(trunk, Hiera)
    blocks = [b for b in trunk.blocks if isinstance(b, MultiScaleBlock)]
    assert [b.window_size for b in blocks] == [8, 8, 4, 4, 6, 0, 6, 3]
    assert [i for i, b in enumerate(blocks) if b.q_stride] == [1, 3, 6]
    assert [(b.dim, b.dim_out) for b in blocks] == [
        (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 128), (128, 128),
    ]  # fmt: skip
    assert [b.attn.num_heads for b in blocks] == [1, 2, 2, 4, 4, 4, 8, 8]
    assert trunk.channel_list == [128, 64, 32, 16]
    assert trunk.get_num_layers() == 8
    assert trunk.get_layer_id("pos_embed_window") == 0
    assert trunk.get_layer_id("patch_embed.proj.weight") == 0
    assert trunk.get_layer_id("blocks.6.attn.qkv.weight") == 7
    assert trunk.get_layer_id("something_else") == 9


def test_image_encoder_matches_reference(
    tiny: dict[str, object], image_ref: dict[str, torch.Tensor]
) -> None:
    encoder = tiny["image_encoder"]
    assert isinstance(encoder, ImageEncoder)
    image = image_ref["image"]
    with torch.no_grad():
        trunk_out = encoder.trunk(image)
        neck_feats, _ = encoder.neck(trunk_out)
        out = encoder(image)
    for i in range(4):
        _assert_close(trunk_out[i], image_ref[f"trunk.{i}"], f"trunk.{i}")
    _assert_close(neck_feats[3], image_ref["neck.features.3"], "neck.features.3")
    assert len(out["vision_pos_enc"]) == 3 and len(out["backbone_fpn"]) == 3
    for i in range(3):
        _assert_close(out["vision_pos_enc"][i], image_ref[f"vision_pos_enc.{i}"], f"pos.{i}")
    _assert_close(out["vision_features"], image_ref["vision_features"], "vision_features")
    _assert_close(out["backbone_fpn"][2], image_ref["backbone_fpn.2"], "backbone_fpn.2")


def _frame_features(
    encoder: ImageEncoder, images: torch.Tensor, f: int, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-16 features and their sine PE of frame ``f``, expanded to the object batch."""
    out = encoder(images[f : f + 1])
    feats = out["vision_features"].expand(batch, -1, -1, -1)
    pos = out["vision_pos_enc"][-1].expand(batch, -1, -1, -1)
    return feats, pos


def test_memory_encoder_matches_reference(
    tiny: dict[str, object], video_ref: dict[str, torch.Tensor]
) -> None:
    """``direct/frame0/maskmem_features``: prompt-frame memory of two objects (both present)."""
    encoder, mem_enc = tiny["image_encoder"], tiny["memory_encoder"]
    assert isinstance(encoder, ImageEncoder) and isinstance(mem_enc, MemoryEncoder)
    masks = torch.cat([video_ref[f"input/mask_inputs_128/obj{o}"] for o in (1, 2)])
    # SAM2Base: high-res logits of a mask prompt are mask*20-10; the memory encoder gets
    # sigmoid(logits)*20-10 with skip_mask_sigmoid=True.
    mask_for_mem = torch.sigmoid(masks * 20.0 - 10.0) * 20.0 - 10.0
    with torch.no_grad():
        pix_feat, _ = _frame_features(encoder, video_ref["input/images"], 0, batch=2)
        out = mem_enc(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
    _assert_close(out["vision_features"], video_ref["direct/frame0/maskmem_features"], "maskmem")
    _assert_close(
        out["vision_pos_enc"][0], video_ref["direct/frame0/maskmem_pos_enc"], "maskmem_pos"
    )


def _memory_bank(
    sd: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], f: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rebuild the memory bank SAM2Base feeds to the memory attention at frame ``f`` of the
    ``direct`` run (cond frame 0, then previous frames oldest first; object pointers of frame 0
    then of frames f-1, f-2, ... with signed temporal PE). Returns ``memory [M, B, 16]``,
    ``memory_pos [M, B, 16]`` and the number of pointer tokens."""
    tpos_enc = sd["maskmem_tpos_enc"]  # [7, 1, 1, 16]
    # t_pos 1..6 are the frames f-6..f-1 (oldest first); frame 0 is the conditioning frame.
    non_cond = [(f - (NUM_MASKMEM - t), t) for t in range(1, NUM_MASKMEM)]
    frames = [(0, 0)] + [(frame, t) for frame, t in non_cond if frame > 0]
    mems, mem_pos = [], []
    for frame, t_pos in frames:
        feats = ref[f"direct/frame{frame}/maskmem_features"].flatten(2).permute(2, 0, 1)
        pos = ref[f"direct/frame{frame}/maskmem_pos_enc"].flatten(2).permute(2, 0, 1)
        mems.append(feats)
        mem_pos.append(pos + tpos_enc[NUM_MASKMEM - t_pos - 1])
    max_ptrs = 4  # min(num_frames, max_obj_ptrs_in_encoder)
    ptr_frames = [0] + [f - d for d in range(1, max_ptrs) if f - d > 0]
    ptrs = torch.stack([ref[f"direct/frame{t}/obj_ptr"] for t in ptr_frames])  # [P, B, 64]
    t_diff = torch.tensor([float(f - t) for t in ptr_frames])
    tpe = get_1d_sine_pe(t_diff / (max_ptrs - 1), dim=D_MODEL)
    tpe = tpe @ sd["obj_ptr_tpos_proj.weight"].t() + sd["obj_ptr_tpos_proj.bias"]  # [P, 16]
    p, b = ptrs.shape[:2]
    split = D_MODEL // MEM_DIM
    ptr_tokens = ptrs.reshape(p, b, split, MEM_DIM).permute(0, 2, 1, 3).flatten(0, 1)
    ptr_pos = tpe[:, None, :].expand(p, b, MEM_DIM).repeat_interleave(split, dim=0)
    memory = torch.cat([*mems, ptr_tokens])
    memory_pos = torch.cat([*mem_pos, ptr_pos])
    return memory, memory_pos, ptr_tokens.shape[0]


@pytest.mark.parametrize("f", [1, 2, 3])
def test_memory_attention_matches_reference(
    tiny: dict[str, object], video_ref: dict[str, torch.Tensor], f: int
) -> None:
    """``direct/frame{f}/pix_feat_with_mem``: 1-3 memory frames (RoPE k repeat) + pointers."""
    encoder, mem_attn = tiny["image_encoder"], tiny["memory_attention"]
    assert isinstance(encoder, ImageEncoder) and isinstance(mem_attn, MemoryAttention)
    sd = tiny["sd"]
    assert isinstance(sd, dict)
    with torch.no_grad():
        feats, pos = _frame_features(encoder, video_ref["input/images"], f, batch=2)
        b, c, h, w = feats.shape
        memory, memory_pos, n_ptr = _memory_bank(sd, video_ref, f)
        out = mem_attn(
            curr=feats.flatten(2).permute(2, 0, 1),
            memory=memory,
            curr_pos=pos.flatten(2).permute(2, 0, 1),
            memory_pos=memory_pos,
            num_obj_ptr_tokens=n_ptr,
        )
    assert memory.shape[0] == h * w * min(f, NUM_MASKMEM) + n_ptr
    pix_feat_with_mem = out.permute(1, 2, 0).reshape(b, c, h, w)
    _assert_close(pix_feat_with_mem, video_ref[f"direct/frame{f}/pix_feat_with_mem"], f"frame{f}")
