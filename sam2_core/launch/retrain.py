"""Scheduled retraining without Kubeflow Pipelines: the program the manifests' CronJob runs.

Usage (inside the image; also works from a laptop with a kube config)::

    python -m sam2_core.launch.retrain cron   --config-dir /etc/sam2kf --run-id RUN [--dry-run]
    python -m sam2_core.launch.retrain data   --raw URL --frames URL --shards URL
    python -m sam2_core.launch.retrain launch --config-dir /etc/sam2kf --run-id RUN \
        --shards URL --output-dir URL [--wait] [--dry-run]

The config dir is the mounted ConfigMap ``sam2kf-train-config`` written by
``python -m sam2_core.launch.render_manifests``: ``job.json`` (PyTorchJobSpec fields shared by every
run), ``overrides.txt`` (Hydra overrides for ``sam2kf train``, one or more per line) and
``retrain.json`` (data locations; ``kfp_host`` non-empty = submit to KFP instead).

``cron`` either runs ``sam2kf submit --host <kfp_host> <submit_args>`` (KFP installed), or runs
the data steps (extract + shard) and creates the PyTorchJob named from the run id, so a retried
pod of the same CronJob run attaches to the job it created instead of starting a second one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2_core.launch.launcher import RUN_ID_ANNOTATION
from sam2_core.launch.pytorchjob import (
    PyTorchJobSpec,
    job_name_for_run,
    render_pytorchjob,
    spec_from_dict,
    split_overrides,
)

log = logging.getLogger("sam2kf.retrain")


@dataclass
class RetrainConfig:
    """Contents of ``retrain.json`` in the ConfigMap (all URLs are fsspec URLs or PVC paths)."""

    raw: str = "/data/raw"
    work_root: str = "/data/work"
    output_root: str = "/data/runs"
    kfp_host: str = ""
    submit_args: list[str] = field(default_factory=list)
    timeout_s: int = 24 * 3600
    poll_s: float = 30.0
    every: int = 4
    shard_size_mb: int = 256
    val_fraction: float = 0.1


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise SystemExit(f"cannot read {path}: {e}") from e


def load_retrain_config(config_dir: str | Path) -> RetrainConfig:
    path = Path(config_dir) / "retrain.json"
    if not path.exists():
        return RetrainConfig()
    data = json.loads(_read(path))
    try:
        return RetrainConfig(**data)
    except TypeError as e:
        raise SystemExit(f"{path}: {e}") from e


def build_spec(
    config_dir: str | Path,
    *,
    run_id: str,
    shards: str,
    output_dir: str,
    name: str | None = None,
    namespace: str | None = None,
) -> PyTorchJobSpec:
    """PyTorchJobSpec for one run from ``job.json`` + ``overrides.txt`` + the run's data URLs.

    The namespace is the caller's (``namespace``, else ``$POD_NAMESPACE`` from the downward
    API, else job.json's), so renaming the namespace with kustomize needs no config change.
    """
    config_dir = Path(config_dir)
    job_path = config_dir / "job.json"
    try:
        shared = json.loads(_read(job_path))
    except json.JSONDecodeError as e:
        raise SystemExit(f"{job_path}: not valid JSON: {e}") from e
    overrides_path = config_dir / "overrides.txt"
    overrides = split_overrides(_read(overrides_path)) if overrides_path.exists() else []
    train_args = [*overrides, f"data.shards={shards}", f"trainer.output_dir={output_dir}"]
    try:
        namespace = namespace or os.environ.get("POD_NAMESPACE") or shared.get("namespace")
        # The launcher compares this annotation on HTTP 409 to attach only to our own run's job.
        annotations = {**shared.get("annotations", {}), RUN_ID_ANNOTATION: run_id}
        return spec_from_dict(
            {**shared, "namespace": namespace or "default", "annotations": annotations},
            name=name or job_name_for_run(run_id),
            train_args=train_args,
        )
    except (TypeError, ValueError) as e:
        raise SystemExit(f"{job_path}: {e}") from e


# --------------------------------------------------------------------------------------------
# data steps
# --------------------------------------------------------------------------------------------


def run_data_steps(
    *,
    raw: str,
    frames: str,
    shards: str,
    every: int = 4,
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    workers: int = 0,
) -> None:
    """Extract frames then write Parquet shards; each step is skipped when already complete."""
    from sam2_core import storage

    if storage.exists(storage.join(shards, "manifest.json")):
        log.info("shards already complete at %s; nothing to do", shards)
        return
    if not storage.exists(storage.join(frames, "extract_summary.json")):
        # Imported by name at run time: the data package is optional for the cluster helpers.
        extract_dataset = importlib.import_module("sam2_core.data.extract").extract_dataset
        summary = extract_dataset(src=raw, dst=frames, every=every, workers=workers)
        log.info(
            "extracted %d videos (%d failed) to %s", len(summary.ok), len(summary.failed), frames
        )
    write_shards = importlib.import_module("sam2_core.data.shards").write_shards

    write_shards(src=frames, dst=shards, shard_size_mb=shard_size_mb, val_fraction=val_fraction)
    log.info("wrote shards to %s", shards)


# --------------------------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------------------------


def run_job(
    job: dict[str, Any], *, wait: bool, timeout_s: float, poll_s: float, api_client: Any = None
) -> int:
    """Create (or attach to) ``job`` through the pipeline's launcher; with ``wait``, follow the
    Master's log until the job ends (raises on failure/timeout, deletes the job on SIGTERM)."""
    from sam2_core.launch.launcher import PyTorchJobLauncher

    launcher = PyTorchJobLauncher(
        api_client=api_client,
        namespace=job["metadata"]["namespace"],
        poll_interval_s=poll_s,
        timeout_s=timeout_s,
    )
    if not wait:
        launcher.create_or_attach(job)
        return 0
    result = launcher.launch(job)
    log.info("pytorchjob %s/%s: %s", result.namespace, result.name, result.state)
    return 0


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _print_yaml(obj: Any) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump(obj, sort_keys=False))


def _launch(
    spec: PyTorchJobSpec, *, dry_run: bool, wait: bool, timeout_s: float, poll_s: float
) -> int:
    job = render_pytorchjob(spec)
    if dry_run:
        _print_yaml(job)
        return 0
    return run_job(job, wait=wait, timeout_s=timeout_s, poll_s=poll_s)


def cmd_data(args: argparse.Namespace) -> int:
    if args.demo_if_empty:
        from sam2_core import storage

        if not storage.exists(args.raw) or not storage.listdir(args.raw):
            write_demo_dataset = importlib.import_module("sam2_core.data.demo").write_demo_dataset
            log.info("no raw data at %s: writing the built-in demo dataset", args.raw)
            write_demo_dataset(dst=args.raw)
    run_data_steps(
        raw=args.raw,
        frames=args.frames,
        shards=args.shards,
        every=args.every,
        shard_size_mb=args.shard_size_mb,
        val_fraction=args.val_fraction,
        workers=args.workers,
    )
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    spec = build_spec(
        args.config_dir,
        run_id=args.run_id,
        shards=args.shards,
        output_dir=args.output_dir,
        name=args.name,
        namespace=args.namespace,
    )
    cfg = load_retrain_config(args.config_dir)
    return _launch(
        spec, dry_run=args.dry_run, wait=args.wait, timeout_s=cfg.timeout_s, poll_s=cfg.poll_s
    )


def cron_plan(config_dir: str | Path, run_id: str) -> dict[str, Any]:
    """What ``cron`` will do for ``run_id``: {"mode": "kfp", "command": [...]} or
    {"mode": "pytorchjob", "frames", "shards", "output_dir", "job": <PyTorchJob>}."""
    cfg = load_retrain_config(config_dir)
    if cfg.kfp_host:
        return {
            "mode": "kfp",
            "command": ["sam2kf", "submit", "--host", cfg.kfp_host, *cfg.submit_args],
        }
    from sam2_core import storage

    work = storage.join(cfg.work_root, run_id)
    shards = storage.join(work, "shards")
    output_dir = storage.join(cfg.output_root, run_id)
    spec = build_spec(config_dir, run_id=run_id, shards=shards, output_dir=output_dir)
    return {
        "mode": "pytorchjob",
        "raw": cfg.raw,
        "frames": storage.join(work, "frames"),
        "shards": shards,
        "output_dir": output_dir,
        "job": render_pytorchjob(spec),
    }


def run_cron(config_dir: str | Path, run_id: str, *, api_client: Any = None) -> int:
    """One scheduled run: KFP submit, or data steps then the PyTorchJob (followed to its end)."""
    plan = cron_plan(config_dir, run_id)
    cfg = load_retrain_config(config_dir)
    if plan["mode"] == "kfp":
        log.info("submitting the pipeline to KFP: %s", " ".join(plan["command"]))
        return subprocess.run(plan["command"], check=False).returncode
    run_data_steps(
        raw=plan["raw"],
        frames=plan["frames"],
        shards=plan["shards"],
        every=cfg.every,
        shard_size_mb=cfg.shard_size_mb,
        val_fraction=cfg.val_fraction,
    )
    return run_job(
        plan["job"], wait=True, timeout_s=cfg.timeout_s, poll_s=cfg.poll_s, api_client=api_client
    )


def cmd_cron(args: argparse.Namespace) -> int:
    if args.dry_run:
        _print_yaml(cron_plan(args.config_dir, args.run_id))
        return 0
    return run_cron(args.config_dir, args.run_id)


def wait_for_path(path: str, *, timeout_s: float, poll_s: float = 10.0) -> None:
    """Block until ``path`` (any fsspec URL) exists; TimeoutError after ``timeout_s``."""
    from sam2_core import storage

    deadline = time.monotonic() + timeout_s
    while not storage.exists(path):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:.0f}s")
        log.info("waiting for %s", path)
        time.sleep(poll_s)
    log.info("found %s", path)


def cmd_wait(args: argparse.Namespace) -> int:
    wait_for_path(args.path, timeout_s=args.timeout, poll_s=args.poll)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sam2_core.launch.retrain",
        description="Scheduled retraining on plain Kubernetes (the CronJob's program): extract + "
        "shard, then create (or attach to) the PyTorchJob; or submit to KFP when configured.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("cron", help="one scheduled run (KFP submit, or data steps + PyTorchJob)")
    p.add_argument("--config-dir", required=True, help="mounted ConfigMap sam2kf-train-config")
    p.add_argument("--run-id", required=True, help="stable id of this run (the CronJob's Job name)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the PyTorchJob only")
    p.set_defaults(func=cmd_cron)

    p = sub.add_parser(
        "data", help="extract frames and write Parquet shards (skips finished steps)"
    )
    p.add_argument("--raw", required=True, help="raw SA-V style videos (URL or path)")
    p.add_argument("--frames", required=True, help="where extracted frames go")
    p.add_argument("--shards", required=True, help="where Parquet shards go")
    p.add_argument("--every", type=int, default=4, help="keep every Nth frame (default 4)")
    p.add_argument("--workers", type=int, default=0, help="decode processes (0 = in-process)")
    p.add_argument("--shard-size-mb", type=int, default=256, help="target shard size")
    p.add_argument("--val-fraction", type=float, default=0.1, help="videos held out for validation")
    p.add_argument(
        "--demo-if-empty",
        action="store_true",
        help="write the built-in demo dataset to --raw first when it does not exist (dev/CI)",
    )
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("wait", help="wait until a path/URL exists (init container of jobs)")
    p.add_argument("--path", required=True, help="file or URL to wait for")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds (default 6 h)")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between checks")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("launch", help="render and create (or attach to) the PyTorchJob")
    p.add_argument("--config-dir", required=True, help="dir with job.json and overrides.txt")
    p.add_argument("--run-id", required=True, help="stable run id; the job name derives from it")
    p.add_argument("--name", default=None, help="explicit job name instead of the derived one")
    p.add_argument("--namespace", default=None, help="default: $POD_NAMESPACE, else job.json's")
    p.add_argument("--shards", required=True, help="data.shards for sam2kf train")
    p.add_argument("--output-dir", required=True, help="trainer.output_dir for sam2kf train")
    p.add_argument("--wait", action="store_true", help="wait until the job finishes")
    p.add_argument("--dry-run", action="store_true", help="print the PyTorchJob only")
    p.set_defaults(func=cmd_launch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
