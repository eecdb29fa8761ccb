"""Training-step throughput and peak memory (forward with prompt simulation, loss, backward,
gradient clipping, AdamW step) for ``tiny`` and ``sam2.1_hiera_t``.

Default (a few minutes on 2 CPU cores): hiera_t at 256 px with 4 frames / 2 objects (the
configuration of the issue's reference number), then tiny and hiera_t at 256 px with 8 frames /
3 objects, then the reference configuration again with bf16 autocast on CPU
(``trainer.cpu_amp``; skip with ``--no-cpu-amp``). ``--act-ckpt`` / ``--compile`` apply to
these cases; ``--full``: the grid {tiny, sam2.1_hiera_t} x {256, 1024} px x 8 frames x
3 objects x {no act. ckpt, act. ckpt} x {eager, torch.compile}. On a GPU everything runs in
bf16 autocast. Every case runs on synthetic batches made once and saved, after one untimed
warm-up step; the prompt draws (mask vs clicks, correction clicks) make steps differ by up to
1.6x, so the default averages 6 steps.

Printed per case: wall s/step, frames/s, peak memory (CUDA max allocated, or the process peak
RSS on CPU: each case runs in a fresh process), CPU-seconds per step summed over all threads
(``time.process_time``) and the 1-minute load average before and after the case.

Baselines, for hiera_t at 256 px, 4 frames, 2 objects (the MOSE recipe's prompts, drop path
0.1, fp32 on CPU):

* ``--reference VENV`` (recommended): Meta's own code, sam2 1.1.0 from PyPI, in the environment
  made by ``benchmarks/reference/setup_env.sh`` — its ``SAM2Train``, official loss,
  ``torch.optim.AdamW`` and clipping on exactly the same batches, alternated with ours
  ``--reference-rounds`` times on this machine (fastest round per step on both sides).
* the issue's figure, about 2.0 s per step, taken on another machine (an Intel Xeon with
  2 cores; this kind of machine has also been an AMD EPYC): printed as a wall ratio and a
  CPU-time ratio against its 4.0 CPU-s upper bound, for orientation only.

    .venv/bin/python benchmarks/train_step.py [--full] [--steps N] [--threads N]
        [--act-ckpt] [--compile] [--no-cpu-amp] [--reference VENV [--reference-rounds R]]
        [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from reference_run import run_reference_script  # this folder (the script's sys.path[0])
from saved_batches import save_synthetic_batches

META_S_PER_STEP = 2.0  # hiera_t, 256 px, 4 frames, 2 objects, CPU (reference venv, this machine)
META_CORES = 2  # the machine the reference number was taken on


@dataclass
class Case:
    model: str
    res: int
    frames: int
    objects: int
    act_ckpt: bool = False
    compile: bool = False
    #: bf16 autocast on CPU (``trainer.cpu_amp``); on a GPU every case runs in bf16 autocast
    cpu_amp: bool = False


def save_batches(case: Case, steps: int, path: str) -> None:
    """The synthetic batches of a case (1 warm-up + ``steps``), as plain tensors, so our step
    and Meta's (``--reference``) run on exactly the same data."""
    save_synthetic_batches(
        res=case.res, frames=case.frames, objects=case.objects, count=steps + 1, path=path
    )


def _run_case(
    case: Case,
    device: str,
    steps: int,
    threads: int,
    batches_path: str,
    queue: mp.Queue,  # type: ignore[type-arg]
) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)

    from sam2_core.data.loader.collate import BatchedVideo
    from sam2_core.model.build import build_model
    from sam2_core.train.losses import LossConfig, MultiStepMultiMasksAndIous
    from sam2_core.train.model_train import SAM2Train
    from sam2_core.train.optim import OptimConfig, ScheduledOptimizer
    from sam2_core.train.prompts import PromptConfig, PromptSimulator

    torch.manual_seed(0)
    dev = torch.device(device)
    # drop path 0.1 as in the MOSE fine-tuning recipe (and in Meta's config of --reference)
    overrides = {"image_size": case.res, "image_encoder": {"trunk": {"drop_path_rate": 0.1}}}
    model = build_model(case.model, overrides=overrides, mode="train").to(dev)
    if case.compile:
        trunk = model.get_submodule("image_encoder.trunk")
        trunk.forward = torch.compile(trunk.forward)  # type: ignore[method-assign]
    tm = SAM2Train(
        model,
        PromptSimulator(PromptConfig(), click_seed=0),
        act_ckpt_image_encoder=case.act_ckpt,
        act_ckpt_iterative_pt_sampling=case.act_ckpt,
    ).train()
    opt = ScheduledOptimizer(model, OptimConfig())
    loss_fn = MultiStepMultiMasksAndIous.from_config(LossConfig())
    saved = torch.load(batches_path, weights_only=True)
    batches = [BatchedVideo(**b).to(dev) for b in saved[: steps + 1]]
    torch.manual_seed(1)
    amp = dev.type == "cuda" or case.cpu_amp

    def step(batch) -> None:  # type: ignore[no-untyped-def]
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            outs = tm(batch)
            loss = loss_fn(outs, batch.masks)["core_loss"]
        if loss.requires_grad:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()

    step(batches[0])  # warm-up (and compilation)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    c0 = time.process_time()
    per_step_cpu = []
    per_step_wall = []
    for b in batches[1:]:
        c1, t1 = time.process_time(), time.perf_counter()
        step(b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        per_step_cpu.append(time.process_time() - c1)
        per_step_wall.append(time.perf_counter() - t1)
    cpu_s = (time.process_time() - c0) / steps
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    s_per_step = (time.perf_counter() - t0) / steps
    queue.put(
        {
            **asdict(case),
            "device": device,
            "s_per_step": s_per_step,
            # CPU seconds of all threads per step: comparable across machine load
            "cpu_s_per_step": cpu_s,
            "cpu_s_each_step": per_step_cpu,
            "s_each_step": per_step_wall,
            "threads": torch.get_num_threads(),
            "frames_per_s": case.frames / s_per_step,
            "peak_mem_gb": peak_gb,
            "mem_kind": "cuda max allocated" if dev.type == "cuda" else "process peak RSS",
        }
    )


def run_case(
    case: Case, device: str, steps: int, threads: int, batches_path: str
) -> dict[str, object]:
    """Each case in a fresh process, so the CPU peak RSS belongs to that case alone."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    load0 = _load()
    p = ctx.Process(target=_run_case, args=(case, device, steps, threads, batches_path, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        why = f"exit code {p.exitcode}"
        if p.exitcode == -9:
            # The kernel's OOM killer. On CPU, 1024 px x 8 frames x 3 objects needs far more
            # than 24 GB: attention with dropout materialises [objects, 4096, ~28k] weights
            # per memory-attention layer and frame (GPU SDPA kernels do not).
            why += " (SIGKILL: out of memory)"
        return {**asdict(case), "device": device, "error": why}
    return {**q.get(), "load_before": load0, "load_after": _load()}


def run_reference(venv: str, batches_path: str, steps: int, threads: int) -> dict[str, Any]:
    """Meta's own training step (``benchmarks/reference/meta_train_step.py``) in the reference
    environment, on the batches in ``batches_path``."""
    res = run_reference_script(
        venv, "meta_train_step.py", [batches_path, str(steps), str(threads)], timeout=3600
    )
    if isinstance(res, str):
        return {"error": res}
    if res.returncode != 0:
        return {"error": f"exit {res.returncode}: {res.stderr.strip()[-800:]}"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["s_per_step"] = sum(out["s_each_step"]) / len(out["s_each_step"])
    out["cpu_s_per_step"] = sum(out["cpu_s_each_step"]) / len(out["cpu_s_each_step"])
    return out


def compare_with_reference(
    ours: dict[str, Any], case: Case, device: str, args: argparse.Namespace, batches_path: str
) -> None:
    """Ours and Meta's step on the same batches, alternated ``--reference-rounds`` times; per
    step the fastest of the rounds is kept on both sides (the machine's speed drifts by 10-20 %
    over minutes, so single runs minutes apart are not comparable)."""
    rounds_ours = [ours["s_each_step"]]
    rounds_meta = []
    for k in range(args.reference_rounds):
        if k > 0:
            again = run_case(case, device, args.steps, args.threads, batches_path)
            if "error" in again:
                print(f"  ours, round {k + 1}: {again['error']}")
                return
            rounds_ours.append(again["s_each_step"])
        meta = run_reference(args.reference, batches_path, args.steps, args.threads)
        if "error" in meta:
            print(f"  Meta's SAM2Train (sam2 1.1.0) on the same batches: {meta['error']}")
            return
        rounds_meta.append(meta["s_each_step"])
    best_ours = [min(x) for x in zip(*rounds_ours)]
    best_meta = [min(x) for x in zip(*rounds_meta)]
    mean_ours, mean_meta = sum(best_ours) / len(best_ours), sum(best_meta) / len(best_meta)
    ours["meta_same_machine"] = {
        "rounds": args.reference_rounds,
        "ours_best_each_step": best_ours,
        "meta_best_each_step": best_meta,
        "ours_s_per_step": mean_ours,
        "meta_s_per_step": mean_meta,
    }
    print(
        f"  Meta's SAM2Train (sam2 1.1.0, fp32) on the same batches, this machine, alternated "
        f"{args.reference_rounds}x, fastest round per step: Meta {mean_meta:.3f} s/step vs ours "
        f"{mean_ours:.3f} -> ours {mean_meta / mean_ours:.2f}x faster "
        f"(per step ours {_fmt(best_ours)} vs Meta {_fmt(best_meta)})",
        flush=True,
    )


def _fmt(xs: object) -> str:
    return "[" + " ".join(f"{x:.2f}" for x in xs) + "]"  # type: ignore[attr-defined]


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--full", action="store_true", help="the whole grid (slow on CPU)")
    ap.add_argument(
        "--steps",
        type=int,
        default=6,
        help="timed steps per case (after 1 warm-up); prompt decisions vary per step "
        "(mask vs click inputs, correction clicks), so fewer steps give noisy averages",
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads (default: torch's choice)"
    )
    ap.add_argument(
        "--act-ckpt", action="store_true", help="activation checkpointing (default cases)"
    )
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile the trunk (default cases)"
    )
    ap.add_argument(
        "--no-cpu-amp",
        action="store_true",
        help="skip the extra CPU bf16-autocast case (trainer.cpu_amp) of the reference config",
    )
    ap.add_argument(
        "--reference",
        default=None,
        metavar="VENV",
        help="environment made by benchmarks/reference/setup_env.sh: also time Meta's own "
        "SAM2Train step (sam2 1.1.0) on the same batches, right after ours (CPU)",
    )
    ap.add_argument(
        "--reference-rounds",
        type=int,
        default=2,
        help="with --reference: alternate ours and Meta's this many times",
    )
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--json", default=None, help="also write results to this JSON file")
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.full:
        cases = [
            Case(m, r, 8, 3, ac, comp)
            for m in ("tiny", "sam2.1_hiera_t")
            for r in (256, 1024)
            for ac in (False, True)
            for comp in (False, True)
        ]
    else:
        flags = (args.act_ckpt, args.compile)
        cases = [
            Case("sam2.1_hiera_t", 256, 4, 2, *flags),
            Case("tiny", 256, 8, 3, *flags),
            Case("sam2.1_hiera_t", 256, 8, 3, *flags),
        ]
        if device == "cpu" and not args.no_cpu_amp:
            # The reference configuration again with bf16 autocast on CPU (trainer.cpu_amp).
            cases.append(Case("sam2.1_hiera_t", 256, 4, 2, *flags, cpu_amp=True))
    results = []
    threads = args.threads or torch.get_num_threads()
    print(
        f"device={device} steps={args.steps} torch={torch.__version__} "
        f"threads={threads} cores={os.cpu_count()} load(1min)={_load():.1f}"
    )
    hdr = (
        f"{'model':16s} {'px':>5s} {'T':>2s} {'O':>2s} {'ckpt':>5s} {'compile':>7s} {'bf16':>4s} "
        f"{'s/step':>8s} {'frames/s':>9s} {'peak GB':>8s} {'cpu-s/step':>10s} {'load':>9s}"
    )
    print(hdr)
    tmp = tempfile.TemporaryDirectory()
    for i, case in enumerate(cases):
        batches_path = os.path.join(tmp.name, f"case{i}.pt")
        save_batches(case, args.steps, batches_path)
        r = run_case(case, device, args.steps, args.threads, batches_path)
        results.append(r)
        if "error" in r:
            print(
                f"{case.model:16s} {case.res:5d} {case.frames:2d} {case.objects:2d} -> {r['error']}"
            )
            continue
        print(
            f"{case.model:16s} {case.res:5d} {case.frames:2d} {case.objects:2d} "
            f"{case.act_ckpt!s:>5s} {case.compile!s:>7s} {case.cpu_amp or device != 'cpu'!s:>4s} "
            f"{r['s_per_step']:8.3f} "
            f"{r['frames_per_s']:9.2f} {r['peak_mem_gb']:8.2f} {r['cpu_s_per_step']:10.2f} "
            f"{r['load_before']:4.1f}>{r['load_after']:4.1f}",
            flush=True,
        )
        is_ref_config = case.model == "sam2.1_hiera_t" and case.res == 256 and case.frames == 4
        if is_ref_config and args.reference and device == "cpu" and not case.cpu_amp:
            compare_with_reference(r, case, device, args, batches_path)
        if is_ref_config:
            wall_ratio = META_S_PER_STEP / float(r["s_per_step"])  # type: ignore[arg-type]
            meta_cpu = META_S_PER_STEP * META_CORES
            cpu_ratio = meta_cpu / float(r["cpu_s_per_step"])  # type: ignore[arg-type]
            precision = (
                "bf16 autocast here, fp32 in the reference"
                if case.cpu_amp and device == "cpu"
                else "both fp32"
                if device == "cpu"
                else "GPU bf16 here, CPU fp32 in the reference"
            )
            print(
                f"  vs Meta SAM2Train ~{META_S_PER_STEP:.1f} s/step on {META_CORES} cores "
                f"[{precision}] "
                f"(hiera_t, 256 px, 4 frames, 2 objects, CPU): wall ratio {wall_ratio:.2f}x "
                f"(>1 = faster; only meaningful on an idle machine), CPU-time ratio "
                f"{cpu_ratio:.2f}x against <= {meta_cpu:.1f} CPU-s/step"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
