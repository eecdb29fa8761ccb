"""IUQ wired into SAM 2 training: query capture, replayed prompts, DDP queue filling, trainer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from sam2_core.model.build import build_model
from sam2_core.train.iuq import (
    EquivarianceConfig,
    GeoTransform,
    IUQConfig,
    PixelQueue,
    UniquenessConfig,
    update_queue,
)
from sam2_core.train.iuq_train import (
    PIXELS_KEY,
    QUERY_KEY,
    IUQObjective,
    ReplayPrompts,
    object_video_ids,
)
from sam2_core.train.losses import LossConfig
from sam2_core.train.model_train import SAM2Train
from sam2_core.train.prompts import PromptConfig, PromptPlan, PromptSimulator
from sam2_core.train.synthetic import SyntheticLoader

from .train_helpers import free_port, run_two_ranks

SIZE = 128


def _batch(seed: int, *, frames: int = 3, objects: int = 2) -> Any:
    loader = SyntheticLoader(
        resolution=SIZE,
        num_frames=frames,
        max_num_objects=objects,
        batch_size=1,
        rank=0,
        seed=seed,
    )
    return next(iter(loader))


def _setup(
    cfg: IUQConfig, *, pt_prob: float = 1.0, corrections: int = 2
) -> tuple[Any, IUQObjective, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("tiny", mode="train").train()
    prompts = PromptSimulator(
        PromptConfig(
            prob_to_use_pt_input_for_train=pt_prob, num_correction_pt_per_frame=corrections
        ),
        click_seed=3,
    )
    objective = IUQObjective(cfg, model=model, loss_cfg=LossConfig(), seed=0)
    return model, objective, objective.wrap(SAM2Train(model, prompts))


# ------------------------------------------------------------------------------------------------
# model-side capture


@pytest.mark.parametrize("pt_prob", [1.0, 0.0])
def test_captured_query_is_the_selected_mask_token(pt_prob: float) -> None:
    """query . pixels reproduces the frame's final low-res mask (multimask argmax / token 0)."""
    cfg = IUQConfig(uniqueness=UniquenessConfig(weight=1.0))
    model, _, module = _setup(cfg, pt_prob=pt_prob)
    decoder = model.sam_mask_decoder
    outs, eq_outs = module(_batch(0))
    assert eq_outs is None and decoder.capture is None  # capture is switched off again
    checked = 0
    for out in outs:
        assert out[QUERY_KEY].shape == (2, decoder.transformer_dim // 8)
        assert out[PIXELS_KEY].shape[:2] == (2, decoder.transformer_dim // 8)
        assert out[QUERY_KEY].requires_grad
        if out["mask_inputs"] is not None:
            continue  # the output is the mask prompt itself
        logits = torch.einsum("oc,ochw->ohw", out[QUERY_KEY], out[PIXELS_KEY])
        present = out["object_score_logits"][:, 0] > 0
        torch.testing.assert_close(logits[present], out["pred_masks"][present, 0])
        checked += int(present.sum())
    assert checked > 0


def test_capture_off_leaves_outputs_unchanged() -> None:
    model, _, module = _setup(IUQConfig(equivariance=EquivarianceConfig(weight=3.0)))
    outs, _ = module(_batch(0))
    assert all(QUERY_KEY not in o and PIXELS_KEY not in o for o in outs)
    assert model.sam_mask_decoder.capture is None
    assert "capture" not in " ".join(model.state_dict())


def test_uniqueness_gradient_reaches_mask_tokens() -> None:
    cfg = IUQConfig(uniqueness=UniquenessConfig(weight=1.0, queue_size=512))
    model, objective, module = _setup(cfg)
    dim = objective.queue.dim
    objective.queue.enqueue(torch.randn(256, dim), torch.full((256,), 12345))
    batch = _batch(1)
    outs, _ = module(batch)
    vids = object_video_ids(batch, step=0, rank=0, world_size=1)
    loss = objective.uniqueness(outs, vids)
    assert loss.item() > 0
    loss.backward()
    dec = model.sam_mask_decoder
    assert dec.mask_tokens.weight.grad is not None and dec.mask_tokens.weight.grad.abs().sum() > 0
    hyper = [p.grad for p in dec.output_hypernetworks_mlps.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in hyper)


# ------------------------------------------------------------------------------------------------
# transformed view


def _no_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            setattr(m, "dropout_p", 0.0)  # noqa: B010 (attention modules: not a Dropout)


def test_identity_transform_replays_prompts_exactly() -> None:
    """g = identity: same prompts, clicks and correction clicks -> the same predictions."""
    cfg = IUQConfig(equivariance=EquivarianceConfig(weight=3.0, prob=1.0))
    model, _, module = _setup(cfg, pt_prob=1.0, corrections=2)
    _no_dropout(model)
    identity = GeoTransform(flip=False, x0=0.0, y0=0.0, cw=1.0, ch=1.0)
    outs, eq_outs = module(_batch(2), identity)
    assert eq_outs is not None
    for a, b in zip(outs, eq_outs):
        pa, pb = a["multistep_point_inputs"], b["multistep_point_inputs"]
        assert len(pa) == len(pb)
        for x, y in zip(pa, pb):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x["point_coords"], y["point_coords"], atol=1e-4, rtol=0)
                assert torch.equal(x["point_labels"], y["point_labels"])
        torch.testing.assert_close(
            a["pred_masks_high_res"], b["pred_masks_high_res"], atol=2e-3, rtol=1e-3
        )


def test_replayed_boxes_and_clicks_follow_a_flip() -> None:
    masks = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    masks[0, 0, 10:20, 5:15] = True
    box = {
        "point_coords": torch.tensor([[[5.0, 10.0], [14.0, 19.0]]]),
        "point_labels": torch.tensor([[2, 3]], dtype=torch.int32),
    }
    plan = PromptPlan(
        num_frames=1,
        use_pt_input=True,
        init_cond_frames=[0],
        frames_not_in_init_cond=[],
        frames_to_add_correction_pt=[0],
        gt_masks_per_frame={0: masks[0].unsqueeze(1)},
        point_inputs_per_frame={0: box},
    )
    click = {
        "point_coords": torch.tensor([[[5.0, 10.0], [7.0, 12.0]]]),
        "point_labels": torch.tensor([[2, 1]], dtype=torch.int32),
    }
    outs = [{"multistep_point_inputs": [box, click]}]
    flip = GeoTransform(flip=True, x0=0.0, y0=0.0, cw=1.0, ch=1.0)
    replay = ReplayPrompts(
        base=PromptSimulator(), plan=plan, outs=outs, transform=flip, masks=masks.flip(-1)
    )
    new_box = replay.transformed_plan.point_inputs_per_frame[0]["point_coords"]
    # x -> 63 - x, corners re-sorted to (top-left, bottom-right)
    assert new_box.tolist() == [[[49.0, 10.0], [58.0, 19.0]]]
    pts, labels = replay.correction_click(
        masks.flip(-1), torch.zeros(1, 1, 64, 64), training=True, frame_idx=0, step=1
    )
    assert pts.tolist() == [[[56.0, 12.0]]] and labels.tolist() == [[1]]
    assert torch.equal(replay.transformed_plan.gt_masks_per_frame[0], masks.flip(-1)[0, :, None])


def test_equivariance_term_with_crop_and_flip_has_gradient() -> None:
    cfg = IUQConfig(equivariance=EquivarianceConfig(weight=3.0, prob=1.0))
    model, objective, module = _setup(cfg, pt_prob=1.0, corrections=1)
    batch = _batch(3)
    g = GeoTransform(flip=True, x0=0.1, y0=0.2, cw=0.7, ch=0.7)
    outs, eq_outs = module(batch, g)
    assert eq_outs is not None
    loss = objective.equivariance(outs, eq_outs, batch.masks, g)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.sam_mask_decoder.mask_tokens.weight.grad is not None


# ------------------------------------------------------------------------------------------------
# DDP: the queue is filled from every rank


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from sam2_core.train.distributed import all_gather_padded

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        queue = PixelQueue(size=16, dim=4)
        n = 3 + 2 * rank  # different row counts per rank: padding is needed
        emb = torch.full((n, 4), float(rank + 1))
        vid = torch.full((n,), 100 + rank)
        update_queue(queue=queue, embeddings=emb, video_ids=vid, gather_fn=all_gather_padded)
        # a rank with nothing to add still takes part in the collective
        empty = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        update_queue(
            queue=queue,
            embeddings=empty[0] if rank == 0 else emb[:1],
            video_ids=empty[1] if rank == 0 else vid[:1],
            gather_fn=all_gather_padded,
        )
        torch.save(queue.state_dict(), os.path.join(out, f"queue{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gather_fills_queue_from_both_ranks(tmp_path: Path) -> None:
    mp.spawn(_gather_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"queue{r}.pt", weights_only=True) for r in range(2)]
    for st in states:
        assert st["count"] == 3 + 5 + 1
        ids = st["video_ids"][: st["count"]].tolist()
        assert ids == [100] * 3 + [101] * 5 + [101]
        emb = st["embeddings"][: st["count"], 0].tolist()
        assert emb == [1.0] * 3 + [2.0] * 6
    assert torch.equal(states[0]["embeddings"], states[1]["embeddings"])


@pytest.mark.integration
def test_torchrun_two_ranks_with_iuq(tmp_path: Path) -> None:
    """2 gloo ranks: weights stay identical and the queue holds both ranks' pixels."""
    overrides = [
        "experiment=smoke",
        "data=synthetic",
        "data.num_frames=2",
        "prompts.num_correction_pt_per_frame=1",
        "trainer.max_steps=3",
        "trainer.ckpt_every=0",
        "trainer.image_every=0",
        "trainer.progress=false",
        "iuq.uniqueness.weight=1.0",
        "iuq.uniqueness.queue_size=1000",
        "iuq.equivariance.weight=3.0",
        "iuq.equivariance.prob=1.0",
    ]
    res = run_two_ranks(tmp_path, overrides, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["params"] for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(tmp_path / "checkpoints" / "step-000003" / "state.pt", weights_only=False)
    q = state["iuq"]["queue"]
    ranks = {int(v) % 2 for v in q["video_ids"][: q["count"]] - (1 << 40)}
    assert ranks == {0, 1}


# ------------------------------------------------------------------------------------------------
# trainer


def test_config_switches(tmp_path: Path) -> None:
    from sam2_core.train.config import ConfigError, load_train_config

    assert not load_train_config(["experiment=smoke"]).iuq.enabled
    cfg = load_train_config(["experiment=smoke", "iuq=paper"])
    assert cfg.iuq.uniqueness.weight == 1.0 and cfg.iuq.equivariance.weight == 3.0
    assert cfg.iuq.uniqueness.queue_size == 100_000 and cfg.iuq.uniqueness.samples_per_object == 50
    with pytest.raises(ConfigError, match=r"iuq\.equivariance\.prob"):
        load_train_config(["experiment=smoke", "iuq.equivariance.prob=1.5"])


@pytest.mark.integration
def test_two_step_training_with_both_objectives(tmp_path: Path) -> None:
    from sam2_core.train.config import load_train_config
    from sam2_core.train.trainer import run_training

    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        assert k not in os.environ
    out = tmp_path / "run"
    cfg = load_train_config(
        [
            "experiment=smoke",
            f"trainer.output_dir={out}",
            "trainer.max_steps=2",
            "trainer.ckpt_every=2",
            "trainer.log_every=1",
            "trainer.image_every=0",
            "trainer.progress=false",
            "data.demo_num_videos=2",
            "data.demo_num_frames=8",
            "data.num_frames=2",
            "prompts.num_correction_pt_per_frame=1",
            "iuq.uniqueness.weight=1.0",
            "iuq.uniqueness.queue_size=2000",
            "iuq.equivariance.weight=3.0",
            "iuq.equivariance.prob=1.0",
        ]
    )
    summary = run_training(cfg)
    assert summary["step"] == 2
    stats = [json.loads(x) for x in (out / "train_stats.jsonl").read_text().splitlines()]
    for s in stats:
        # > 0 unless every frame was mask-prompted (then nothing is predicted to compare)
        assert s["iuq_equivariance_applied"] == 1.0 and s["iuq_equivariance"] >= 0
        assert s["iuq_uniqueness"] >= 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"losses/iuq_uniqueness", "losses/iuq_equivariance"} <= tags
    # the queue is training state only: the exported model has exactly the official keys
    exported = torch.load(out / "model_final.pt", weights_only=True)
    assert set(exported) == {"model"}
    assert set(exported["model"]) == set(build_model("tiny").state_dict())
    state = torch.load(out / "checkpoints" / "step-000002" / "state.pt", weights_only=False)
    assert set(state["model"]) == set(exported["model"])
    assert state["iuq"]["queue"]["count"] > 0
