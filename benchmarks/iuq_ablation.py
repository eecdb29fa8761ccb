"""IUQ ablation: baseline, +uniqueness, +equivariance, +both on the demo data (``tiny`` model).

Every run trains the randomly initialised ``tiny`` model (128 px) from the same data for the
same number of steps (``sam2_core.train.run_training``, the code path of ``sam2kf train``),
then scores J&F on *held-out* demo videos (rendered with another seed: same object looks,
different videos) with the trainer's end-of-training validation (``validate_in_memory``,
first-frame mask prompts). Reported per variant: J&F mean and sample standard deviation over
seeds, and the training time per step (mean over steps 2.. and seeds; the first step pays
one-off costs) with its ratio to the baseline. Printed as a table and written as JSON.

The demo videos draw their objects from four shared looks, so many instances of similar
appearance occur across videos (and a look-alike within most videos).

    .venv/bin/python benchmarks/iuq_ablation.py                # quick: ~1-2 min on 2 cores
    .venv/bin/python benchmarks/iuq_ablation.py --steps 60 --seeds 3 --train-videos 24 \\
        --val-videos 8 --frames 24                             # the documented ablation
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "+uniqueness": ["iuq.uniqueness.weight=1.0"],
    "+equivariance": ["iuq.equivariance.weight=3.0"],
    "+both": ["iuq.uniqueness.weight=1.0", "iuq.equivariance.weight=3.0"],
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (4)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (1)")
    p.add_argument("--train-videos", type=int, default=6, help="demo training videos (6)")
    p.add_argument("--val-videos", type=int, default=2, help="held-out demo videos (2)")
    p.add_argument("--frames", type=int, default=12, help="frames per demo video (12)")
    p.add_argument("--clip-frames", type=int, default=3, help="frames per training clip (3)")
    p.add_argument("--objects", type=int, default=3, help="max objects per clip (3)")
    p.add_argument("--corrections", type=int, default=2, help="correction clicks per frame (2)")
    p.add_argument("--eq-prob", type=float, default=0.5, help="iuq.equivariance.prob (0.5)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(VARIANTS)}",
    )
    p.add_argument(
        "--init",
        default=None,
        help="warm start: {'model': state_dict} file every run starts from (default: random init)",
    )
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="warm start made here: train the baseline this many steps (seed 1000) first",
    )
    p.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    p.add_argument(
        "--out",
        default="local_outputs/iuq_ablation/results.json",
        help="JSON results (default local_outputs/iuq_ablation/results.json)",
    )
    return p.parse_args(argv)


def _make_data(work: str, args: argparse.Namespace) -> tuple[str, str]:
    from sam2_core import storage
    from sam2_core.data.prep.demo import write_demo_dataset

    train, val = os.path.join(work, "train"), os.path.join(work, "heldout")
    for dst, n, seed in ((train, args.train_videos, 0), (val, args.val_videos, 1)):
        if not storage.is_complete(dst):
            write_demo_dataset(dst=dst, num_videos=n, num_frames=args.frames, seed=seed)
            storage.mark_complete(dst)
    return train, val


def _one_run(
    *,
    variant: str,
    seed: int,
    train: str,
    val: str,
    out: str,
    args: argparse.Namespace,
    steps: int | None = None,
    init: str | None = None,
) -> dict[str, Any]:
    from sam2_core.eval.vos import validate_in_memory
    from sam2_core.train.config import load_train_config
    from sam2_core.train.trainer import run_training

    overrides = [
        "experiment=smoke",
        f"data.raw={train}",
        f"data.val={val}",
        f"data.val_max_videos={args.val_videos}",
        f"data.num_frames={args.clip_frames}",
        f"data.max_num_objects={args.objects}",
        f"prompts.num_correction_pt_per_frame={args.corrections}",
        f"prompts.decision_seed={seed}",
        f"trainer.seed={seed}",
        f"trainer.output_dir={out}",
        f"trainer.max_steps={steps or args.steps}",
        f"model.checkpoint={init}" if init else "model.checkpoint=null",
        "trainer.ckpt_every=0",
        "trainer.log_every=1",
        "trainer.image_every=0",
        "trainer.progress=false",
        "trainer.device=cpu",
        f"iuq.equivariance.prob={args.eq_prob}",
        *VARIANTS[variant],
    ]
    t0 = time.perf_counter()
    summary = run_training(load_train_config(overrides), validate=validate_in_memory)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "train_stats.jsonl")) as f:
        stats = [json.loads(line) for line in f if line.strip()]
    step_times = [float(s["step_time_s"]) for s in stats]
    steady = step_times[1:] or step_times  # the first step pays one-off costs
    val_res = summary.get("validation") or {}
    return {
        "variant": variant,
        "seed": seed,
        "jf": float(val_res.get("J&F", float("nan"))),
        "j": float(val_res.get("J", float("nan"))),
        "f": float(val_res.get("F", float("nan"))),
        "step_time_s": statistics.fmean(steady),
        "step_time_median_s": statistics.median(steady),
        "wall_s": round(wall, 1),
        "final_core_loss": float(stats[-1].get("core_loss", float("nan"))),
        "iuq_uniqueness_mean": _mean(stats, "iuq_uniqueness"),
        "iuq_equivariance_mean": _mean(stats, "iuq_equivariance"),
        "equivariance_steps": sum(int(s.get("iuq_equivariance_applied", 0)) for s in stats),
    }


def _mean(stats: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(s[key]) for s in stats if key in s]
    return round(statistics.fmean(vals), 5) if vals else None


def _summarise(runs: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    rows = []
    base_time = None
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        if not mine:
            continue
        jfs = [r["jf"] for r in mine]
        t = statistics.fmean(r["step_time_s"] for r in mine)
        if v == "baseline":
            base_time = t
        rows.append(
            {
                "variant": v,
                "seeds": len(mine),
                "jf_mean": round(statistics.fmean(jfs), 2),
                "jf_std": round(statistics.stdev(jfs), 2) if len(jfs) > 1 else 0.0,
                "jf_per_seed": [round(x, 2) for x in jfs],
                "step_time_s": round(t, 3),
                "time_ratio_vs_baseline": round(t / base_time, 3) if base_time else None,
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | seeds | held-out J&F (mean ± std) | per seed | s/step | vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['time_ratio_vs_baseline']:.2f}x" if r["time_ratio_vs_baseline"] else "-"
        per_seed = ", ".join(f"{x:.1f}" for x in r["jf_per_seed"])
        lines.append(
            f"| {r['variant']} | {r['seeds']} | {r['jf_mean']:.2f} ± {r['jf_std']:.2f} | "
            f"{per_seed} | {r['step_time_s']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; allowed: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)
    work = args.work or tempfile.mkdtemp(prefix="iuq-ablation-")
    os.makedirs(work, exist_ok=True)
    train, val = _make_data(work, args)
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    init = args.init
    if args.pretrain_steps > 0 and not init:
        pre = os.path.join(work, "pretrain")
        shutil.rmtree(pre, ignore_errors=True)
        r = _one_run(
            variant="baseline",
            seed=1000,
            train=train,
            val=val,
            out=pre,
            args=args,
            steps=args.pretrain_steps,
        )
        init = os.path.join(pre, "model_final.pt")
        print(f"warm start: baseline, {args.pretrain_steps} steps, held-out J&F {r['jf']:.2f}")
    args.init = init
    # Seed-major order: a partial run still compares all variants on the first seeds.
    for seed in range(args.seeds):
        for v in variants:
            out = os.path.join(work, "runs", f"{v.strip('+')}-seed{seed}")
            shutil.rmtree(out, ignore_errors=True)  # a leftover run would be resumed, not redone
            r = _one_run(variant=v, seed=seed, train=train, val=val, out=out, args=args, init=init)
            runs.append(r)
            print(
                f"[{time.perf_counter() - t_start:7.1f}s] {v:<14} seed {seed}: "
                f"J&F {r['jf']:.2f}  {r['step_time_s']:.2f} s/step  (run {r['wall_s']} s)",
                flush=True,
            )
            _write(args.out, args, runs, variants, time.perf_counter() - t_start)
    rows = _summarise(runs, variants)
    print()
    print(
        f"tiny model, 128 px, {args.steps} steps, {args.train_videos} training / "
        f"{args.val_videos} held-out demo videos, clips of {args.clip_frames} frames, "
        f"<= {args.objects} objects, equivariance prob {args.eq_prob}, "
        f"init {args.init or 'random'}"
    )
    print(_table(rows))
    print(f"\nwritten {args.out} (total {time.perf_counter() - t_start:.0f} s)")
    return 0


def _write(
    path: str, args: argparse.Namespace, runs: list[dict[str, Any]], variants: list[str], t: float
) -> None:
    from sam2_core.storage import write_json_atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "summary": _summarise(runs, variants),
        "runs": runs,
        "total_s": round(t, 1),
        "table_markdown": _table(_summarise(runs, variants)),
    }
    write_json_atomic(path, payload)


if __name__ == "__main__":
    sys.exit(main())
