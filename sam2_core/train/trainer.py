"""The training loop: one code path for CPU/GPU and one/many processes.

``run_training(cfg)`` sets up the process group from the environment, builds the model (initial
weights from an official checkpoint, or the newest complete checkpoint of the output directory
when the job restarts), the layer-decayed AdamW, the loss and the data loader, then runs
``trainer.max_steps`` optimizer steps with bf16 autocast on GPU, gradient clipping, periodic
checkpoints and validation, TensorBoard/JSONL logging, and finally exports
``<output_dir>/model_final.pt`` in the official ``{"model": state_dict}`` format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sam2_core import storage
from sam2_core.data.readers.formats import iter_videos
from sam2_core.tb_mirror import TensorBoardMirror
from sam2_core.train import distributed as D
from sam2_core.train.checkpoint import CheckpointManager, rng_state, set_rng_state
from sam2_core.train.config import TrainConfig
from sam2_core.train.losses import CORE_LOSS_KEY, LOSS_KEYS, MultiStepMultiMasksAndIous
from sam2_core.train.model_train import SAM2Train
from sam2_core.train.optim import ScheduledOptimizer, freeze_parameters
from sam2_core.train.prompts import PromptSimulator
from sam2_core.train.run_identity import ResumeError, RunIdentity, read_identity, write_identity

log = logging.getLogger(__name__)

#: In-training validation, passed in by the caller so that training never imports evaluation:
#: ``validate(model, records, max_videos=N)`` -> summary with at least ``"J&F"`` (x100).
#: ``model`` is the plain (DDP-unwrapped) SAM2Base, ``records`` the validation videos.
Validator = Callable[..., dict[str, Any]]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; the message names the step and the loss terms."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _iter_tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _iter_tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _iter_tensors(v)


def _graph_anchor(outs: list[dict[str, Any]]) -> Tensor | None:
    """``0 * sum(outputs)``: keeps every output in the backward graph.

    DDP (find_unused_parameters) marks parameters reachable from the forward outputs as used;
    adding this zero makes backward reach exactly those, even on a step whose loss has no
    gradient (e.g. all frames prompted with masks), so ranks never disagree. Numerically a no-op.
    """
    terms = [t.float().sum() for t in _iter_tensors(outs) if t.requires_grad]
    if not terms:
        return None
    return torch.stack(terms).sum() * 0.0


class Trainer:
    """Holds the training state of one process. Use :func:`run_training`."""

    def __init__(
        self, cfg: TrainConfig, info: D.DistInfo, *, validate: Validator | None = None
    ) -> None:
        self.cfg = cfg
        self.info = info
        self.validator = validate
        self.device = info.device
        t = cfg.trainer
        self.out = t.output_dir.rstrip("/")
        self.ckpt = CheckpointManager(storage.join(self.out, "checkpoints"), keep_last=t.keep_last)
        seed_everything(t.seed + info.rank)
        self.step = 0
        self.best_metric: float | None = None
        self.stats: list[dict[str, Any]] = []
        self.writer: Any = None
        self._tb: TensorBoardMirror | None = None

        self.model = self._build_model()
        self.prompts = PromptSimulator(cfg.prompts, click_seed=t.seed * 1000 + 17 * info.rank + 1)
        self.train_module = SAM2Train(
            self.model,
            self.prompts,
            act_ckpt_image_encoder=t.activation_checkpointing,
            act_ckpt_iterative_pt_sampling=t.activation_checkpointing,
        ).to(self.device)
        self.frozen = (
            freeze_parameters(self.model, list(cfg.optim.freeze)) if cfg.optim.freeze else []
        )
        self.optim = ScheduledOptimizer(self.model, cfg.optim)
        self.loss_fn = MultiStepMultiMasksAndIous.from_config(cfg.loss)
        self.use_amp = t.amp and (self.device.type == "cuda" or t.cpu_amp)
        self.amp_dtype = torch.bfloat16 if t.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16
        )
        self.data_state: dict[str, Any] = {"epoch": 0, "position": 0}
        self.resumed_from: int | None = None
        # Rank 0's view of the output folder's run (run.json); see _resume_decision.
        self.identity: RunIdentity | None = None
        self.replace_previous = False
        # Instance-unique querying objectives (docs/iuq.md); None when off (the default).
        self.iuq: Any = None
        if cfg.iuq.enabled:
            from sam2_core.train.iuq_train import IUQObjective

            self.iuq = IUQObjective(
                cfg.iuq,
                model=self.model,
                loss_cfg=cfg.loss,
                seed=t.seed,
                rank=info.rank,
                world_size=info.world_size,
                gather_fn=D.all_gather_padded,
            )
        self._resume_or_init()
        if t.checkpoint_encoder_blocks:
            hiera: Any = self.model.get_submodule("image_encoder.trunk")
            hiera.checkpoint_blocks = True
        if t.compile:
            trunk: Any = self.model.get_submodule("image_encoder.trunk")
            trunk.forward = torch.compile(trunk.forward)
        self.ddp = D.wrap_ddp(
            self.iuq.wrap(self.train_module) if self.iuq is not None else self.train_module,
            info,
            find_unused_parameters=t.find_unused_parameters,
        )
        self.loader = self._build_loader()

    # ------------------------------------------------------------------------------------------
    # construction
    def _build_model(self) -> nn.Module:
        from sam2_core.model.build import build_model
        from sam2_core.model.released import lookup

        skip = ("checkpoint", "checkpoint_sha256")
        arch = {k: v for k, v in self.cfg.model.items() if k not in skip}
        # A released SAM 2.0 file needs its architecture flags, also when resuming (a name
        # lookup only: nothing is downloaded here).
        release = (
            lookup(self.cfg.checkpoint, model=self.cfg.model_name) if self.cfg.checkpoint else None
        )
        # The model node was composed once, by Hydra, with the rest of the training config.
        model = build_model(
            self.cfg.model_name,
            config=arch,
            checkpoint_overrides=release.overrides if release else (),
            mode="train",
        )
        return model.to(self.device)

    def _resume_decision(self) -> tuple[int | None, bool, str | None]:
        """Rank 0: ``(step to resume or None, replace the folder's run, refusal or None)``.

        The newest complete checkpoint is resumed only when the folder's recorded run identity
        (run.json) is this configuration's and there are steps left to train; otherwise the run
        is refused with one line, or replaced with ``trainer.resume=new``. A checkpoint exactly
        at ``max_steps`` without ``model_final.pt`` is a run interrupted while finishing: it
        resumes (0 steps) and completes validation and export.
        """
        t = self.cfg.trainer
        self.identity = RunIdentity.of(cfg=self.cfg)
        found = self.ckpt.load_latest(map_location="cpu")
        if found is None:
            return None, False, None
        step = found[0]
        recorded = read_identity(output_dir=self.out)
        if recorded is None:
            log.info("%s records no run identity (older folder): resuming it as this run", self.out)
            diff: list[str] = []
        else:
            diff = recorded.differences(self.identity)
        unfinished = step == t.max_steps and not storage.exists(
            storage.join(self.out, "model_final.pt")
        )
        nothing_left = step >= t.max_steps and not unfinished
        if t.resume == "new":
            if diff or nothing_left:
                log.info(
                    "trainer.resume=new: replacing the run in %s (step %d) by a new one",
                    self.out,
                    step,
                )
                return None, True, None
            log.info(
                "trainer.resume=new: %s holds this same run in progress (step %d): resuming it "
                "(delete the folder to start it over)",
                self.out,
                step,
            )
            return step, False, None
        new_run = (
            "add trainer.resume=new to start a new run in this folder (replaces its checkpoints)"
        )
        if diff:
            return (
                None,
                False,
                f"{self.out} holds a different run ({'; '.join(diff)}): rerun with its settings to "
                f"resume it, choose another trainer.output_dir, or {new_run}",
            )
        if nothing_left:
            return (
                None,
                False,
                f"{self.out} already reached step {step} and trainer.max_steps={t.max_steps} "
                f"leaves nothing to train: set trainer.max_steps above {step} to continue it, or "
                f"{new_run}",
            )
        return step, False, None

    def _resume_or_init(self) -> None:
        """Newest complete checkpoint of the output dir, else the official initial weights."""
        decision: tuple[int | None, bool, str | None] = (None, False, None)
        if self.info.is_main:
            decision = self._resume_decision()
        chosen, self.replace_previous, refusal = D.broadcast_object(decision)
        if refusal:
            raise ResumeError(refusal)
        if chosen is None:
            if self.cfg.checkpoint:
                from sam2_core.model.build import load_checkpoint
                from sam2_core.model.released import resolve_checkpoint

                # Every rank resolves: a released name is downloaded once per cache (a file
                # lock makes the other ranks of a machine wait, then reuse it), and a rank on
                # another node finds its own copy, as a path from rank 0 may not exist there.
                resolved = resolve_checkpoint(
                    self.cfg.checkpoint,
                    model=self.cfg.model_name,
                    sha256=self.cfg.checkpoint_sha256,
                    progress=self.info.is_main,
                )
                load_checkpoint(self.model, resolved.path)
                log.info("initial weights: %s", resolved.describe())
            return
        from sam2_core.train.checkpoint import load_state, step_dir_name

        state = load_state(storage.join(self.ckpt.root, step_dir_name(chosen)), map_location="cpu")
        self.model.load_state_dict(state["model"], strict=True)
        self.optim.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_metric = state.get("best_metric")
        self.data_state = dict(state.get("data", self.data_state))
        if self.iuq is not None and state.get("iuq"):
            self.iuq.load_state_dict(state["iuq"])
        per_rank = state.get("rng_per_rank") or []
        if len(per_rank) == self.info.world_size:
            mine = per_rank[self.info.rank]
            set_rng_state(mine["rng"])
            self.prompts.load_state_dict(mine["prompts"])
        else:
            # Different world size: keep the decision stream, re-seed the per-rank streams.
            if per_rank:
                self.prompts.rng.bit_generator.state = per_rank[0]["prompts"]["decision_rng"]
            seed_everything(self.cfg.trainer.seed + self.info.rank + 7919 * self.step)
        self.resumed_from = self.step
        log.info("resumed from checkpoint step %d", self.step)

    def _build_loader(self) -> Any:
        d = self.cfg.data
        epoch = int(self.data_state.get("epoch", 0))
        position = int(self.data_state.get("position", 0))
        if d.synthetic:
            from sam2_core.train.synthetic import SyntheticLoader

            return SyntheticLoader(
                resolution=d.resolution,
                num_frames=d.num_frames,
                max_num_objects=d.max_num_objects,
                batch_size=d.batch_size,
                rank=self.info.rank,
                seed=self.cfg.trainer.seed,
                epoch=epoch,
                start_position=position,
            )
        from sam2_core.data.loader.train_loader import build_train_loader

        raw = d.raw or (None if d.shards or d.sources else self._demo_data())
        return build_train_loader(
            d.loader_config(raw=raw),
            rank=self.info.rank,
            world_size=self.info.world_size,
            seed=self.cfg.trainer.seed,
            epoch=epoch,
            start_position=position,
        )

    def _demo_data(self) -> str:
        """Generate the demo dataset into ``<output_dir>/demo_data`` (rank 0; others wait)."""
        d = self.cfg.data
        if not d.demo:
            raise ValueError("no training data: set data.raw=<url> or data.shards=<url>")
        dst = storage.join(self.out, "demo_data")
        if self.info.is_main and not storage.is_complete(dst):
            from sam2_core.data.prep.demo import write_demo_dataset

            write_demo_dataset(dst=dst, num_videos=d.demo_num_videos, num_frames=d.demo_num_frames)
            storage.mark_complete(dst)
            log.info("wrote demo data to %s", dst)
        D.barrier()
        return dst

    def _record_identity(self) -> None:
        """Rank 0: clear a replaced run's outputs, then record this run's identity (run.json)."""
        if not self.info.is_main or self.identity is None:
            return
        if self.replace_previous:
            for name in ("checkpoints", "tensorboard", "train_stats.jsonl", "model_final.pt"):
                url = storage.join(self.out, name)
                if storage.exists(url):
                    storage.remove(url)
        if read_identity(output_dir=self.out) != self.identity:
            write_identity(output_dir=self.out, identity=self.identity)

    # ------------------------------------------------------------------------------------------
    # logging
    def _open_writer(self) -> None:
        if not self.info.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        # On object stores event files are written locally and mirrored (tb_mirror.py).
        self._tb = TensorBoardMirror(storage.join(self.out, "tensorboard"))
        self.writer = SummaryWriter(self._tb.log_dir)
        stats_url = storage.join(self.out, "train_stats.jsonl")
        if storage.exists(stats_url):
            lines = storage.read_text(stats_url).splitlines()
            self.stats = [json.loads(x) for x in lines if x.strip()]
            self.stats = [s for s in self.stats if int(s.get("step", 0)) <= self.step]

    def _sync_tensorboard(self) -> None:
        if self.writer is None:
            return
        self.writer.flush()
        if self._tb is not None:
            self._tb.sync()

    def _write_stats(self, record: dict[str, Any]) -> None:
        self.stats.append(record)
        text = "".join(json.dumps(s) + "\n" for s in self.stats)
        storage.write_text_atomic(storage.join(self.out, "train_stats.jsonl"), text)

    def _log_images(self, batch: Any, outs: list[dict[str, Any]]) -> None:
        """Image | GT | prediction of the first object over all frames, as one strip."""
        if self.writer is None:
            return
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        cols = []
        for t, out in enumerate(outs):
            vid = int(batch.obj_to_frame_idx[t, 0, 1])
            img = (batch.img_batch[t, vid].float().cpu() * std + mean).clamp(0, 1)
            gt = batch.masks[t, 0].float().cpu()
            pred = (out["pred_masks_high_res"][0, 0].detach().float().cpu() > 0).float()
            pred = nn.functional.interpolate(pred[None, None], size=gt.shape, mode="nearest")[0, 0]
            overlay_gt = img * 0.5 + torch.stack([gt, gt * 0, gt * 0]) * 0.5
            overlay_pred = img * 0.5 + torch.stack([pred * 0, pred, pred * 0]) * 0.5
            cols.append(torch.cat([img, overlay_gt, overlay_pred], dim=1))
        self.writer.add_image("masks/image_gt_pred", torch.cat(cols, dim=2), self.step)

    # ------------------------------------------------------------------------------------------
    # checkpoints
    def _full_state(self) -> dict[str, Any] | None:
        """Gather per-rank RNG states on rank 0 and assemble the checkpoint (None elsewhere)."""
        mine = {"rng": rng_state(), "prompts": self.prompts.state_dict()}
        gathered: list[Any] = [mine]
        if self.info.world_size > 1:
            gathered = [None] * self.info.world_size
            torch.distributed.all_gather_object(gathered, mine)
        if not self.info.is_main:
            return None
        state = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optim.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "step": self.step,
            "data": dict(self.data_state),
            "best_metric": self.best_metric,
            "rng_per_rank": gathered,
            "world_size": self.info.world_size,
            "model_name": self.cfg.model_name,
        }
        if self.iuq is not None:
            state["iuq"] = self.iuq.state_dict()  # the pixel queue (training state only)
        return state

    def save_checkpoint(self) -> None:
        state = self._full_state()
        if state is not None:
            self.ckpt.save(self.step, state)
            self._sync_tensorboard()
        D.barrier()

    # ------------------------------------------------------------------------------------------
    # validation
    def validate(self) -> dict[str, float] | None:
        """J&F on the validation data through the ``validate`` callable given at construction."""
        result: dict[str, float] | None = None
        if self.info.is_main:
            result = self._validate_main()
        result = D.broadcast_object(result)
        if result and "J&F" in result:
            metric = float(result["J&F"])
            if self.best_metric is None or metric > self.best_metric:
                self.best_metric = metric
                state = self._full_state()  # collective: every rank takes this branch
                if state is not None:
                    self.ckpt.save_best(self.step, state, {"J&F": metric})
        D.barrier()
        return result

    def _validate_main(self) -> dict[str, float] | None:
        if self.validator is None:
            log.info("validation skipped: no validator given (sam2kf train passes J&F)")
            return None
        records = self._val_records()
        if not records:
            log.info("validation skipped: no validation videos")
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                summary = self.validator(
                    self.model, records, max_videos=self.cfg.data.val_max_videos
                )
        finally:
            self.model.train(was_training)
        out = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
        log.info("validation at step %d: %s", self.step, out)
        if self.writer is not None:
            for k, v in out.items():
                self.writer.add_scalar(f"val/{k}", v, self.step)
        return out

    def _val_records(self) -> list[Any]:
        d = self.cfg.data
        limit = d.val_max_videos or 10**9
        if d.val:
            url, split = d.val, None
        elif d.shards:
            url, split = d.shards, "val"
        elif d.demo and not d.raw and not d.synthetic:
            url, split = storage.join(self.out, "demo_data"), None
        else:
            return []
        records = []
        try:
            for rec in iter_videos(url, split=split):
                records.append(rec)
                if len(records) >= limit:
                    break
        except Exception as e:
            if not self.cfg.trainer.skip_missing_validation:
                raise
            log.info("validation skipped: cannot read %s (%s)", url, e)
            return []
        return records

    # ------------------------------------------------------------------------------------------
    # the loop
    def _next_batch(self, it: Iterator[Any] | None) -> tuple[Any, Iterator[Any]]:
        for _ in range(2):
            if it is None:
                it = iter(self.loader)
            try:
                return next(it), it
            except StopIteration:
                it = None  # the loader moved to the next epoch
        raise RuntimeError("the training data loader produced no batches (empty dataset?)")

    def train_step(self, batch: Any) -> tuple[dict[str, float], float, list[dict[str, Any]]]:
        """Forward, loss, backward, clip, optimizer step. Returns (losses, grad norm, outputs)."""
        t = self.cfg.trainer
        self.optim.set_progress(self.step / t.max_steps)
        self.optim.zero_grad()
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.use_amp
            else contextlib.nullcontext()
        )
        with autocast:
            if self.iuq is not None:
                outs, losses = self.iuq.forward_losses(
                    self.ddp, batch, self.loss_fn, step=self.step
                )
            else:
                outs = self.ddp(batch)
                losses = self.loss_fn(outs, batch.masks)
        core = losses[CORE_LOSS_KEY]
        finite = torch.isfinite(core.detach()).float()
        if self.info.world_size > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() < 1:
            terms = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.step + 1} (rank {self.info.rank}: {terms}); "
                "lower the learning rate, check the data, or resume from the last checkpoint"
            )
        anchor = _graph_anchor(outs)
        to_backward = core if anchor is None else core + anchor
        if to_backward.requires_grad:
            self.scaler.scale(to_backward).backward()
        self.scaler.unscale_(self.optim.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.optim.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        else:
            grads = [p.grad.detach().norm() for p in params if p.grad is not None]
            grad_norm = float(torch.stack(grads).norm()) if grads else 0.0
        self.scaler.step(self.optim.optimizer)
        self.scaler.update()
        if self.iuq is not None:
            self.iuq.after_step()  # fill the pixel queue from every rank
        return {k: float(v.detach()) for k, v in losses.items()}, grad_norm, outs

    def run(self, *, dry_run: bool = False) -> dict[str, Any]:
        t = self.cfg.trainer
        if dry_run:
            n_params = sum(p.numel() for p in self.model.parameters())
            summary = {
                "dry_run": True,
                "model": self.cfg.model_name,
                "params": n_params,
                "param_groups": len(self.optim.groups),
                "frozen": len(self.frozen),
                "device": str(self.device),
                "world_size": self.info.world_size,
                "resume_step": self.resumed_from,
                "batches_per_epoch": len(self.loader),
            }
            log.info("dry run: %s", summary)
            return summary
        self._record_identity()
        self._open_writer()
        self.model.train()
        self.train_module.train()
        bar = None
        if self.info.is_main and t.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        it: Iterator[Any] | None = None
        window: dict[str, float] = {}
        n_window = 0
        frames_window = 0
        wait_window = 0.0
        t_window = time.perf_counter()
        while self.step < t.max_steps:
            t0 = time.perf_counter()
            batch, it = self._next_batch(it)
            batch = batch.to(self.device, non_blocking=True)
            wait_window += time.perf_counter() - t0
            self.data_state = {
                "epoch": int(self.loader.epoch),
                "position": int(self.loader.position),
            }
            losses, grad_norm, outs = self.train_step(batch)
            self.step += 1
            for k, v in losses.items():
                window[k] = window.get(k, 0.0) + v
            window["grad_norm"] = window.get("grad_norm", 0.0) + grad_norm
            n_window += 1
            frames_window += batch.num_frames * batch.num_videos
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[CORE_LOSS_KEY]:.3f}")
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                self._log(window, n_window, frames_window, wait_window, t_window)
                window, n_window, frames_window, wait_window = {}, 0, 0, 0.0
                t_window = time.perf_counter()
            if t.image_every and self.step % t.image_every == 0 and self.info.is_main:
                self._log_images(batch, outs)
            del outs
            if t.val_every and self.step % t.val_every == 0 and self.step < t.max_steps:
                self.validate()
            if (t.ckpt_every and self.step % t.ckpt_every == 0) or self.step == t.max_steps:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        final_val = self.validate()
        final_url = storage.join(self.out, "model_final.pt")
        if self.info.is_main:
            from sam2_core.model.build import export_checkpoint

            export_checkpoint(self.model, final_url)
            log.info("exported %s", final_url)
            if self.writer is not None:
                self.writer.close()
            if self._tb is not None:
                self._tb.close()  # final upload of the event files
        D.barrier()
        return {
            "step": self.step,
            "resumed_from": self.resumed_from,
            "final_model": final_url,
            "validation": final_val,
            "last_stats": self.stats[-1] if self.stats else None,
        }

    def _log(
        self, window: dict[str, float], n: int, frames: int, wait: float, t_start: float
    ) -> None:
        elapsed = max(time.perf_counter() - t_start, 1e-9)
        means = {k: v / max(n, 1) for k, v in window.items()}
        means = D.all_reduce_mean(means, self.device)
        record: dict[str, Any] = {"step": self.step}
        record.update({k: round(v, 6) for k, v in means.items()})
        record["frames_per_s"] = round(frames * self.info.world_size / elapsed, 3)
        record["data_wait_s"] = round(wait / max(n, 1), 4)
        record["step_time_s"] = round(elapsed / max(n, 1), 4)
        if self.device.type == "cuda":
            record["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        record["lr"] = self.optim.current_lrs()
        if not self.info.is_main:
            return
        if self.writer is not None:
            iuq_keys = sorted(k for k in means if k.startswith("iuq_"))
            for k in (*LOSS_KEYS, CORE_LOSS_KEY, "grad_norm", *iuq_keys):
                if k in means:
                    self.writer.add_scalar(f"losses/{k}", means[k], self.step)
            self.writer.add_scalar("perf/frames_per_s", record["frames_per_s"], self.step)
            self.writer.add_scalar("perf/data_wait_s", record["data_wait_s"], self.step)
            self.writer.add_scalar("perf/step_time_s", record["step_time_s"], self.step)
            if "gpu_mem_gb" in record:
                self.writer.add_scalar("perf/gpu_mem_gb", record["gpu_mem_gb"], self.step)
            for name, lr in record["lr"].items():
                self.writer.add_scalar(f"lr/{name}", lr, self.step)
            if self._tb is not None and self._tb.due():
                self._sync_tensorboard()  # periodic mirror between checkpoints
        if not math.isfinite(means.get(CORE_LOSS_KEY, 0.0)):
            log.warning("non-finite mean loss in the logging window at step %d", self.step)
        self._write_stats(record)


def run_training(
    cfg: TrainConfig, *, dry_run: bool = False, validate: Validator | None = None
) -> dict[str, Any]:
    """Train according to ``cfg`` in this process (torchrun-aware); returns a summary dict.

    ``validate`` runs the in-training validation (e.g. ``sam2_core.eval.vos.validate_in_memory``);
    without it, validation steps are skipped with a log line.
    """
    info = D.init_distributed(
        cfg.trainer.device,
        backend=cfg.trainer.dist_backend,
        timeout_min=cfg.trainer.dist_timeout_min,
    )
    try:
        trainer = Trainer(cfg, info, validate=validate)
        return trainer.run(dry_run=dry_run)
    finally:
        D.cleanup()
