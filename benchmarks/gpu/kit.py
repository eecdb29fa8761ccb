"""GPU validation kit driver (``benchmarks/gpu/run.sh`` calls it): everything issue 18 item 3
asks of a lent GPU, in one run that fits in 8 minutes on one H200, written as one JSON file.

Sections, in order (each case in its own process, ``benchmarks/gpu/cases.py``; a case that
fails or runs out of time is recorded with its error and the kit goes on; cases that would
start after the overall ``--budget-s`` are recorded as skipped):

1. ``pytest -m gpu`` on the test files that carry the ``gpu`` marker;
2. bf16 autocast vs fp32 (ours): image-encoder outputs and one training step (losses, gradient);
3. training-step time and peak memory, same saved batches on both sides: ours {eager,
   activation checkpointing, torch.compile of the image encoder, both} vs Meta's ``SAM2Train``
   {eager, ``use_act_ckpt_iterative_pt_sampling``, ``compile_image_encoder``};
4. VOS inference frames/s: our ``VideoPredictor`` vs Meta's ``SAM2VideoPredictor``.

GPU sizes: ``sam2.1_hiera_b+`` at 1024 px, 8 frames, 3 objects, bf16 autocast, random weights
(the released checkpoint does not fit the 64 MiB a run can carry; speed does not depend on it).
``--cpu``: ``tiny`` at 128 px, 3 frames, 2 objects, fp32, ``torch.compile(backend="eager")``
(inductor's C++ build takes minutes on CPU), Meta's compile case skipped (max-autotune).

    python benchmarks/gpu/kit.py --out results.json [--cpu] [--meta-python PY]
        [--sam2-src DIR] [--budget-s 450]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GPU = {"model": "sam2.1_hiera_b+", "res": 1024, "frames": 8, "objects": 3, "steps": 3}
CPU = {"model": "tiny", "res": 128, "frames": 3, "objects": 2, "steps": 2}
VOS_FRAMES = {"gpu": 48, "cpu": 6}


class Kit:
    """Runs cases against a wall-clock budget and collects their results."""

    def __init__(self, args: argparse.Namespace, work: str) -> None:
        self.args = args
        self.work = work
        self.t0 = time.perf_counter()
        self.results: dict[str, Any] = {}
        self.device = "cpu" if args.cpu else "cuda"

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def case(self, name: str, spec: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """One case in a fresh process (ours: this interpreter; Meta's: ``--meta-python``)."""
        left = self.left()
        if left < 10:
            out: dict[str, Any] = {"skipped": "kit time budget used up"}
            self.results[name] = out
            print(f"{name}: skipped (budget)", flush=True)
            return out
        path = os.path.join(self.work, f"{name}.json")
        with open(path, "w") as f:
            json.dump({**spec, "device": self.device, "work": self.work}, f)
        env = dict(os.environ)
        if spec.get("side") == "meta":
            py = self.args.meta_python
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.args.sam2_src, env.get("PYTHONPATH", "")) if p
            )
        else:
            py = sys.executable
            env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
        t0 = time.perf_counter()
        try:
            res = subprocess.run(
                [py, os.path.join(HERE, "cases.py"), path],
                env=env,
                capture_output=True,
                text=True,
                timeout=min(timeout, left),
            )
            if res.returncode != 0:
                out = {"error": f"exit {res.returncode}: {res.stderr.strip()[-1500:]}"}
            else:
                out = json.loads(res.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            out = {"error": f"timed out after {min(timeout, left):.0f} s"}
        out["wall_s"] = time.perf_counter() - t0
        out["spec"] = {k: v for k, v in spec.items() if k not in ("batches", "video_dir")}
        self.results[name] = out
        brief = {k: out[k] for k in ("s_per_step", "peak_mem_gb", "frames_per_s") if k in out}
        print(f"{name}: {out.get('error', '')[:300] or brief} ({out['wall_s']:.0f} s)", flush=True)
        return out


def make_inputs(sizes: dict[str, Any], work: str, vos_frames: int) -> tuple[str, str]:
    """Saved synthetic batches (1 warm-up + timed steps) and a JPEG folder for VOS."""
    import numpy as np
    from PIL import Image

    if os.path.dirname(HERE) not in sys.path:
        sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/: the saved-batch format
    from saved_batches import save_synthetic_batches

    path = os.path.join(work, "batches.pt")
    save_synthetic_batches(
        res=sizes["res"],
        frames=sizes["frames"],
        objects=sizes["objects"],
        count=sizes["steps"] + 1,
        path=path,
    )
    video = os.path.join(work, "video")
    os.makedirs(video)
    rng = np.random.default_rng(0)
    side = sizes["res"]
    base = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    for t in range(vos_frames):  # a drifting texture: decodes like a real video, content moves
        Image.fromarray(np.roll(base, 3 * t, axis=1)).save(os.path.join(video, f"{t:05d}.jpg"))
    return path, video


def run_pytest(kit: Kit) -> None:
    files = sorted(
        f
        for f in glob.glob(os.path.join(ROOT, "tests", "**", "test_*.py"), recursive=True)
        # tests/k8s needs the Kubernetes client stack, which the GPU machine lacks
        if "mark.gpu" in Path(f).read_text() and os.sep + "k8s" + os.sep not in f
    )
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *files],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
            timeout=min(150, max(kit.left(), 1)),
        )
        tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-500:]
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
        out = {"rc": res.returncode, "summary": tail, "counts": counts}
        if res.returncode not in (0, 5):
            out["output_tail"] = res.stdout[-4000:]
    except subprocess.TimeoutExpired:
        out = {"error": "pytest timed out"}
    out["files"] = [os.path.relpath(f, ROOT) for f in files]
    out["wall_s"] = time.perf_counter() - t0
    kit.results["pytest_gpu"] = out
    print(f"pytest -m gpu: {out.get('summary', out.get('error'))}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on CPU (a dry run)")
    ap.add_argument(
        "--meta-python",
        default=sys.executable,
        help="interpreter for Meta's cases (default: this one; with --cpu here: .venv-ref/bin/python)",
    )
    ap.add_argument("--sam2-src", default="", help="unpacked sam2-1.1.0 sdist (for Meta's cases)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting cases after this")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per case (CPU)")
    ap.add_argument("--skip", default="", help="comma list of sections: pytest,bf16,train,vos")
    args = ap.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: use --cpu for the dry run", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    sizes = CPU if args.cpu else GPU
    meta_ok = bool(args.sam2_src) and os.path.isdir(os.path.join(args.sam2_src, "training"))
    with tempfile.TemporaryDirectory() as work:
        kit = Kit(args, work)
        kit.results["env"] = {
            "torch": str(torch.__version__),
            "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(),
            "mode": "cpu" if args.cpu else "gpu",
            "sizes": sizes,
            "meta": meta_ok,
        }
        batches, video = make_inputs(sizes, work, VOS_FRAMES["cpu" if args.cpu else "gpu"])
        base = {**sizes, "batches": batches, "video_dir": video, "threads": args.threads}
        compile_backend = "eager" if args.cpu else "inductor"
        if "pytest" not in skip:
            run_pytest(kit)
        if "bf16" not in skip:
            kit.case("bf16_parity", {**base, "kind": "bf16", "side": "ours"}, timeout=150)
        if "train" not in skip:
            for ckpt, comp in ((False, False), (True, False)):
                name = f"train_ours{'_ckpt' if ckpt else ''}"
                kit.case(name, {**base, "kind": "train", "side": "ours", "act_ckpt": ckpt,
                                "compile": comp}, timeout=120)  # fmt: skip
            if meta_ok:
                for ckpt in (False, True):
                    name = f"train_meta{'_ckpt' if ckpt else ''}"
                    kit.case(name, {**base, "kind": "train", "side": "meta", "act_ckpt": ckpt,
                                    "compile": False}, timeout=120)  # fmt: skip
        if "vos" not in skip:
            kit.case("vos_ours", {**base, "kind": "vos", "side": "ours"}, timeout=90)
            if meta_ok:
                kit.case("vos_meta", {**base, "kind": "vos", "side": "meta"}, timeout=90)
        if "train" not in skip:  # compiled cases last: compilation time is the least predictable
            for ckpt in (False, True):
                kit.case(f"train_ours_compile{'_ckpt' if ckpt else ''}",
                         {**base, "kind": "train", "side": "ours", "act_ckpt": ckpt,
                          "compile": True, "compile_backend": compile_backend},
                         timeout=200)  # fmt: skip
            if meta_ok and not args.cpu:
                kit.case("train_meta_compile", {**base, "kind": "train", "side": "meta",
                                                "act_ckpt": False, "compile": True},
                         timeout=240)  # fmt: skip
            elif meta_ok:
                kit.results["train_meta_compile"] = {
                    "skipped": "Meta compiles with mode=max-autotune (inductor): GPU only"
                }
        if not meta_ok:
            kit.results["meta_skipped"] = "no --sam2-src with sam2 1.1.0's training package"
        kit.results["total_s"] = time.perf_counter() - kit.t0
        with open(args.out, "w") as f:
            json.dump(kit.results, f, indent=1)
    print(f"wrote {args.out} ({kit.results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
