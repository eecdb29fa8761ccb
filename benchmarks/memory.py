"""Training memory levers, measured: peak memory of ``sam2kf train`` per setting, with the
plain setting of the same run as the baseline (ratio printed).

Each setting trains ``--steps`` steps on synthetic clips in a fresh process (so peaks do not mix)
and reports the process's peak memory: CUDA max allocated on a GPU, the peak RSS on CPU. Settings:

* ``plain``: nothing saved;
* ``act_ckpt``: ``trainer.activation_checkpointing`` (whole image encoder + correction clicks,
  Meta's two flags);
* ``blocks``: ``trainer.checkpoint_encoder_blocks`` (Hiera block by block);
* ``act_ckpt+blocks``: both;
* ``frozen_encoder``: ``optim.freeze=[image_encoder.*]`` (features under ``no_grad``);
* ``half_frames``: half the frames per clip.

    .venv/bin/python benchmarks/memory.py [--model sam2.1_hiera_t] [--res 256] [--frames 8]
        [--objects 3] [--steps 2] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETTINGS: dict[str, list[str]] = {
    "plain": [],
    "act_ckpt": ["trainer.activation_checkpointing=true"],
    "blocks": ["trainer.checkpoint_encoder_blocks=true"],
    "act_ckpt+blocks": [
        "trainer.activation_checkpointing=true",
        "trainer.checkpoint_encoder_blocks=true",
    ],
    "frozen_encoder": ["optim.freeze=[image_encoder.*]"],
}

CHILD = r"""
import json, resource, sys, time
import torch
from sam2_core.train.config import load_train_config
from sam2_core.train.trainer import run_training
t0 = time.perf_counter()
summary = run_training(load_train_config(sys.argv[1:]))
peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print("RESULT " + json.dumps({"peak_bytes": peak, "wall_s": time.perf_counter() - t0}))
"""


def run_case(
    *, name: str, extra: list[str], args: argparse.Namespace, out: str
) -> dict[str, float]:
    frames = args.frames // 2 if name == "half_frames" else args.frames
    overrides = [
        "experiment=smoke",
        "data=synthetic",
        f"model={args.model}",
        f"model.image_size={args.res}",
        f"data.resolution={args.res}",
        f"data.num_frames={frames}",
        f"data.max_num_objects={args.objects}",
        f"trainer.max_steps={args.steps}",
        f"trainer.device={args.device}",
        "trainer.ckpt_every=0",
        "trainer.val_every=0",
        "trainer.image_every=0",
        "trainer.progress=false",
        f"trainer.output_dir={os.path.join(out, name)}",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *overrides], capture_output=True, text=True, env=env
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"memory.py: setting {name} failed (exit {proc.returncode}): {tail}")
    return dict(json.loads(line[len("RESULT ") :]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    settings = {**SETTINGS, "half_frames": []}
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sam2kf-mem-") as out:
        for name, extra in settings.items():
            t0 = time.perf_counter()
            rows[name] = run_case(name=name, extra=extra, args=args, out=out)
            rows[name]["case_wall_s"] = time.perf_counter() - t0
    base = rows["plain"]["peak_bytes"]
    kind = "CUDA max allocated" if args.device == "cuda" else "peak RSS"
    print(
        f"{args.model} {args.res} px, {args.frames} frames, {args.objects} objects, "
        f"{args.steps} steps, {args.device} ({kind}; baseline: plain, same run)"
    )
    print(f"{'setting':<18} {'peak GB':>8} {'vs plain':>9} {'wall s':>7}")
    for name, r in rows.items():
        gb = r["peak_bytes"] / 2**30
        print(f"{name:<18} {gb:8.2f} {r['peak_bytes'] / base:8.2f}x {r['wall_s']:7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
