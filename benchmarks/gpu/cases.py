"""One measurement of the GPU validation kit, in a fresh process (so that peak memory and
``torch.compile`` state belong to that case alone). Called by ``benchmarks/gpu/kit.py``:

    python benchmarks/gpu/cases.py SPEC.json

``SPEC.json``: ``{"kind": "train"|"vos"|"bf16", "side": "ours"|"meta", "model", "res", "frames",
"objects", "steps", "act_ckpt", "compile", "compile_backend", "device", "batches", "video_dir",
"work"}``. Prints one JSON line with the result. Meta's side runs in an interpreter that has
sam2 1.1.0 (its ``sam2`` and ``training`` packages) on ``PYTHONPATH`` and does not import this
project; our side does not import Meta's code.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NO_DROPOUT = [
    "image_encoder.trunk.drop_path_rate=0.0",
    "memory_attention.layer.dropout=0.0",
    "memory_attention.layer.self_attention.dropout=0.0",
    "memory_attention.layer.cross_attention.dropout=0.0",
]
META_CFG = {"sam2.1_hiera_b+": "b+", "sam2.1_hiera_t": "t", "tiny": "tiny"}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(dev: torch.device) -> tuple[float, str]:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


def _autocast(dev: torch.device) -> Any:
    # bf16 autocast on the GPU (both recipes train in bf16); fp32 on CPU
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


# ---------------------------------------------------------------------------------------------
# Meta's side (sam2 1.1.0)


def _meta_common() -> Any:
    """``benchmarks/reference/meta_common.py``: the reference env's helpers, not a project module."""
    ref = os.path.join(ROOT, "benchmarks", "reference")
    if ref not in sys.path:
        sys.path.insert(0, ref)
    import meta_common

    return meta_common


def _meta_size_overrides(model: str, prefix: str) -> list[str]:
    """Hydra overrides that give Meta's config ``model``'s sizes (``prefix``: the model node)."""
    if model == "sam2.1_hiera_b+":
        return []
    sizes = _meta_common().SIZES[model]
    return ["++" + o.lstrip("+").replace("trainer.model.", prefix) for o in sizes]


def _meta_train_model(spec: dict[str, Any], dev: torch.device) -> Any:
    import sam2  # noqa: F401  (registers its config module with Hydra)
    from hydra import compose
    from hydra.utils import instantiate

    cfg = compose(
        config_name=_meta_common().MOSE,
        overrides=[
            f"scratch.resolution={spec['res']}",
            *_meta_size_overrides(spec["model"], "trainer.model."),
            # Meta's only activation checkpointing: the single-mask correction SAM-head passes
            f"trainer.model.use_act_ckpt_iterative_pt_sampling={bool(spec['act_ckpt'])}",
            f"++trainer.model.compile_image_encoder={bool(spec['compile'])}",
        ],
    )
    model = instantiate(cfg.trainer.model, _recursive_=True).to(dev).train()
    return model, instantiate(cfg.trainer.loss.all)


def _meta_batch(b: dict[str, torch.Tensor], dev: torch.device) -> Any:
    return _meta_common().datapoint(b, dict_key="all").to(dev)


# ---------------------------------------------------------------------------------------------
# our side


def _our_train_model(spec: dict[str, Any], dev: torch.device, *, dropout: bool = True) -> Any:
    from sam2_core.model.build import build_model
    from sam2_core.train.losses import LossConfig, MultiStepMultiMasksAndIous
    from sam2_core.train.model_train import SAM2Train
    from sam2_core.train.prompts import PromptConfig, PromptSimulator

    overrides = [f"image_size={spec['res']}"]
    overrides += (
        ["image_encoder.trunk.drop_path_rate=0.1"] if dropout else NO_DROPOUT
    )  # 0.1: the MOSE recipe
    model = build_model(spec["model"], overrides=overrides, mode="train").to(dev)
    if spec.get("compile"):
        # the image encoder, as Meta's compile_image_encoder does
        enc = model.get_submodule("image_encoder")
        enc.forward = torch.compile(  # type: ignore[method-assign]
            enc.forward, backend=spec.get("compile_backend", "inductor")
        )
    prompts = PromptConfig(**spec.get("prompts", {}))
    tm = SAM2Train(
        model,
        PromptSimulator(prompts, click_seed=0),
        act_ckpt_image_encoder=bool(spec["act_ckpt"]),
        act_ckpt_iterative_pt_sampling=bool(spec["act_ckpt"]),
    ).train()
    return model, tm, MultiStepMultiMasksAndIous.from_config(LossConfig())


def _our_batch(b: dict[str, Any], dev: torch.device) -> Any:
    from sam2_core.data.loader.collate import BatchedVideo

    return BatchedVideo(**b).to(dev)


# ---------------------------------------------------------------------------------------------
# cases


def train_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Training-step time and peak memory: forward with prompt simulation, loss, backward,
    clipping at 0.1, AdamW step; 1 untimed warm-up step (compilation) then ``steps`` timed."""
    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    saved = torch.load(spec["batches"], weights_only=True)
    if spec["side"] == "meta":
        model, loss_fn = _meta_train_model(spec, dev)
        fwd = model
        batches = [_meta_batch(b, dev) for b in saved]
    else:
        model, fwd, loss_fn = _our_train_model(spec, dev)
        batches = [_our_batch(b, dev) for b in saved]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-6, weight_decay=0.1)
    losses: list[float] = []

    def step(batch: Any) -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(dev):
            out = loss_fn(fwd(batch), batch.masks)["core_loss"]
        if out.requires_grad:
            out.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        losses.append(float(out.detach()))

    t0 = time.perf_counter()
    step(batches[0])
    _sync(dev)
    warmup_s = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for b in batches[1 : spec["steps"] + 1]:
        t0 = time.perf_counter()
        step(b)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    peak, kind = _peak_gb(dev)
    return {
        "s_per_step": sum(times) / len(times),
        "s_each_step": times,
        "warmup_s": warmup_s,
        "frames_per_s": spec["frames"] * len(times) / sum(times),
        "peak_mem_gb": peak,
        "mem_kind": kind,
        "losses": losses,
    }


def bf16_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Ours in bf16 autocast against fp32: the image encoder's outputs, and one training step
    (mask prompts, no dropout, so both precisions see the same prompts) — loss terms and the
    gradient (relative distance of the flattened gradients, cosine)."""
    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    model, tm, loss_fn = _our_train_model(
        {**spec, "prompts": {"prob_to_use_pt_input_for_train": 0.0}, "act_ckpt": False},
        dev,
        dropout=False,
    )
    batch = _our_batch(torch.load(spec["batches"], weights_only=True)[0], dev)
    out: dict[str, Any] = {}
    with torch.no_grad():
        ref = model.forward_image(batch.flat_img_batch)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            low = model.forward_image(batch.flat_img_batch)
    enc = {}
    for key in ("vision_features",):
        a, b = low[key].float(), ref[key].float()
        enc[key] = float((a - b).norm() / b.norm())
    for i, (a, b) in enumerate(zip(low["backbone_fpn"], ref["backbone_fpn"])):
        enc[f"backbone_fpn{i}"] = float((a.float() - b).norm() / b.norm())
    out["image_encoder_rel"] = enc

    def grads_and_losses(amp: bool) -> tuple[torch.Tensor, dict[str, float]]:
        tm.prompts.rng = np.random.default_rng(42)  # same prompt plan
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            losses = loss_fn(tm(batch), batch.masks)
        losses["core_loss"].backward()
        g = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        return g, {k: float(v.detach()) for k, v in losses.items()}

    g32, l32 = grads_and_losses(False)
    g16, l16 = grads_and_losses(True)
    out["train_step"] = {
        "loss_fp32": l32,
        "loss_bf16": l16,
        "loss_rel": {k: abs(l16[k] - l32[k]) / max(abs(l32[k]), 1e-30) for k in l32},
        "grad_rel": float((g16 - g32).norm() / g32.norm()),
        "grad_cosine": float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)),
    }
    return out


def vos_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Semi-supervised VOS: ``objects`` masks on frame 0 (from the saved batch), propagate through
    the JPEG folder ``video_dir``; frames/s of the propagation (frame decoding excluded)."""
    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    masks = torch.load(spec["batches"], weights_only=True)[0]["masks"][0]  # [O, H, W]
    if spec["side"] == "meta":
        import sam2  # noqa: F401
        from sam2.build_sam import build_sam2_video_predictor

        name = {"sam2.1_hiera_b+": "b+", "sam2.1_hiera_t": "t"}.get(spec["model"], "t")
        extra = _meta_size_overrides(spec["model"], "model.")
        extra.append(f"++model.image_size={spec['res']}")
        pred = build_sam2_video_predictor(
            f"configs/sam2.1/sam2.1_hiera_{name}.yaml",
            None,
            device=str(dev),
            hydra_overrides_extra=extra,
        )
    else:
        from sam2_core.model.build import build_model
        from sam2_core.model.predictor import VideoPredictor

        pred = VideoPredictor(
            build_model(spec["model"], overrides=[f"image_size={spec['res']}"]).to(dev)
        )
    with torch.inference_mode(), _autocast(dev):
        t0 = time.perf_counter()
        state = pred.init_state(spec["video_dir"])
        init_s = time.perf_counter() - t0
        for o in range(masks.shape[0]):
            pred.add_new_mask(state, frame_idx=0, obj_id=o + 1, mask=masks[o].cpu().numpy())
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        n = 0
        for _ in pred.propagate_in_video(state):
            n += 1
        _sync(dev)
        dt = time.perf_counter() - t0
    peak, kind = _peak_gb(dev)
    return {
        "frames": n,
        "objects": int(masks.shape[0]),
        "propagate_s": dt,
        "frames_per_s": n / dt,
        "init_state_s": init_s,
        "peak_mem_gb": peak,
        "mem_kind": kind,
    }


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    fn = {"train": train_case, "bf16": bf16_case, "vos": vos_case}[spec["kind"]]
    out = fn(spec)
    print(json.dumps({"torch": str(torch.__version__), **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
