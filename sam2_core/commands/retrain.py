"""`sam2kf retrain`: scheduled retraining without Kubeflow Pipelines (the CronJob's program).

Usage (inside the image; also works from a laptop with a kube config)::

    sam2kf retrain cron   --config-dir /etc/sam2kf --run-id RUN [--dry-run]
    sam2kf retrain data   --raw URL --frames URL --shards URL \
        [--num-partitions P [--partition p] --no-commit]
    sam2kf retrain commit --shards URL --num-partitions P [--timeout S]
    sam2kf retrain launch --config-dir /etc/sam2kf --run-id RUN \\
        --shards URL --output-dir URL [--wait] [--dry-run]
    sam2kf retrain wait   --path URL

The config dir is the mounted ConfigMap ``sam2kf-train-config`` written by
``python -m sam2_core.launch.render_manifests``: ``launch.json`` (the launch spec,
:class:`sam2_core.launch.spec.LaunchSpec`) and ``retrain.json`` (:class:`RetrainConfig`: data
locations; ``kfp_host`` non-empty = submit to KFP instead).

``cron`` either runs ``sam2kf submit --host <kfp_host> <submit_args>`` (KFP installed), or runs
the workflow (:func:`sam2_core.workflow.retrain`: extract, shard, train, and with a registry
evaluate and promote) with the job named from the run id, so a retried pod of the same CronJob
run attaches to the job it created instead of starting a second one; its data steps run as
``data_partitions`` partitions in turn, then the commit (the same flow as the fan-out).

``data`` is the data Job's program: with ``--num-partitions P`` it extracts and shards one
partition (``--partition``, default ``$JOB_COMPLETION_INDEX``: the pod's index in an Indexed
Job), and ``commit`` (a Job of its own) waits until every partition is complete, then merges
them into the dataset version (``manifest.json`` last, which the training pods wait for).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2_core import storage
from sam2_core.commands.secrets import redact_argv

log = logging.getLogger("sam2kf.retrain")


@dataclass
class RetrainConfig:
    """Contents of ``retrain.json`` in the ConfigMap (all URLs are fsspec URLs or PVC paths)."""

    #: raw videos; each run works in ``work_root/<run>`` and trains into ``output_root/<run>``
    raw: str = "/data/raw"
    work_root: str = "/data/work"
    output_root: str = "/data/runs"
    #: non-empty: submit the pipeline to this KFP host (with ``submit_args``) instead
    kfp_host: str = ""
    submit_args: list[str] = field(default_factory=list)
    #: seconds between the launcher's looks at the job
    poll_s: float = 30.0
    every: int = 4
    shard_size_mb: int = 256
    val_fraction: float = 0.1
    #: extract + shard as this many partitions (in turn, in the CronJob's pod), then commit
    data_partitions: int = 1
    #: with a registry: only unseen videos, then evaluate against the champion and promote
    registry_uri: str = ""
    dataset_name: str = "retrain"
    #: "" = the experiment's model (a registry needs it named, to evaluate)
    model_name: str = ""
    #: None = the experiment's weights; "champion" = the registry's; a URL; "" = none
    init_checkpoint: str | None = None
    min_jf_gain: float = 0.0


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise SystemExit(f"cannot read {path}: {e}") from e


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(_read(path)))
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON: {e}") from e


def load_retrain_config(config_dir: str | Path) -> RetrainConfig:
    path = Path(config_dir) / "retrain.json"
    if not path.exists():
        return RetrainConfig()
    try:
        return RetrainConfig(**_json(path))
    except TypeError as e:
        raise SystemExit(f"{path}: {e}") from e


def load_launch_spec(config_dir: str | Path, *, namespace: str | None = None) -> Any:
    """The LaunchSpec of ``launch.json``; ``namespace`` replaces its namespace when given
    ("" there means the CronJob's own namespace, ``$POD_NAMESPACE``)."""
    from sam2_core.launch.spec import LaunchSpec

    path = Path(config_dir) / "launch.json"
    try:
        spec = LaunchSpec.from_dict(_json(path))
    except (TypeError, ValueError) as e:
        raise SystemExit(f"{path}: {e}") from e
    return dataclasses.replace(spec, namespace=namespace) if namespace else spec


def _engine(spec: Any, *, poll_s: float, api_client: Any = None) -> Any:
    from sam2_core.launch.engines import make_engine

    return make_engine(spec.engine, api_client=api_client, poll_interval_s=poll_s)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _print_yaml(obj: Any) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump(obj, sort_keys=False))


def cron_plan(config_dir: str | Path, run_id: str) -> dict[str, Any]:
    """What ``cron`` will do for ``run_id``: {"mode": "kfp", "command": [...]} or
    {"mode": <engine>, "raw", "frames", "shards", "output_dir", "job": <manifest>}."""
    from sam2_core.launch.engines import ClusterEngine
    from sam2_core.workflow import resolve_checkpoint, training_run

    cfg = load_retrain_config(config_dir)
    if cfg.kfp_host:
        return {
            "mode": "kfp",
            "command": ["sam2kf", "submit", "--host", cfg.kfp_host, *cfg.submit_args],
        }
    spec = load_launch_spec(config_dir)
    work = storage.join(cfg.work_root, run_id)
    shards = storage.join(work, "shards")
    output_dir = storage.join(cfg.output_root, run_id)
    checkpoint = cfg.init_checkpoint
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint, cfg.registry_uri)
    run = training_run(
        run_id=run_id,
        shards_url=shards,
        output_dir=output_dir,
        model_name=cfg.model_name,
        checkpoint=checkpoint,
    )
    engine = _engine(spec, poll_s=cfg.poll_s)
    plan: dict[str, Any] = {
        "mode": spec.engine,
        "raw": cfg.raw,
        "data_partitions": cfg.data_partitions,
        "frames": storage.join(work, "frames"),
        "shards": shards,
        "output_dir": output_dir,
    }
    if isinstance(engine, ClusterEngine):
        plan["job"] = engine.manifest(spec, run)
    return plan


def run_cron(config_dir: str | Path, run_id: str, *, api_client: Any = None) -> int:
    """One scheduled run: KFP submit, or the workflow with its training job followed to the end."""
    from sam2_core.workflow import retrain

    cfg = load_retrain_config(config_dir)
    if cfg.kfp_host:
        command = cron_plan(config_dir, run_id)["command"]
        # The token comes from the environment (the CronJob's secretKeyRef env KFP_TOKEN, which
        # the child inherits); a --token left in submit_args is masked here and refused there.
        log.info("submitting the pipeline to KFP: %s", " ".join(redact_argv(command)))
        return subprocess.run(command, check=False).returncode
    spec = load_launch_spec(config_dir)
    result = retrain(
        raw_uri=cfg.raw,
        work_dir=storage.join(cfg.work_root, run_id),
        output_dir=storage.join(cfg.output_root, run_id),
        run_id=run_id,
        launch=spec,
        registry_uri=cfg.registry_uri,
        dataset_name=cfg.dataset_name,
        model_name=cfg.model_name,
        init_checkpoint=cfg.init_checkpoint,
        min_jf_gain=cfg.min_jf_gain,
        every=cfg.every,
        shard_size_mb=cfg.shard_size_mb,
        val_fraction=cfg.val_fraction,
        engine=_engine(spec, poll_s=cfg.poll_s, api_client=api_client),
        data_partitions=cfg.data_partitions,
    )
    log.info("retrain %s: %s", run_id, result)
    return 0


def cmd_cron(args: argparse.Namespace) -> int:
    if args.dry_run:
        _print_yaml(cron_plan(args.config_dir, args.run_id))
        return 0
    return run_cron(args.config_dir, args.run_id)


#: set by Kubernetes in every pod of an Indexed Job: the pod's completion index
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"


def data_partition(arg: int | None, num_partitions: int) -> int:
    """``--partition``, else ``$JOB_COMPLETION_INDEX`` (Indexed Job), else 0.

    ValueError (one line naming the input and the fix) when it is not a partition of
    ``num_partitions``."""
    from sam2_core.data.prep.partitions import check_partition

    value: int | str | None = arg
    if value is None:
        value = os.environ.get(COMPLETION_INDEX_ENV, "0") or "0"
    try:
        partition = int(value)
        check_partition(partition=partition, num_partitions=num_partitions)
    except ValueError as e:
        raise ValueError(
            f"--partition / ${COMPLETION_INDEX_ENV}: {e}; give --num-partitions equal to the "
            "Job's completions"
        ) from e
    return partition


def cmd_data(args: argparse.Namespace) -> int:
    """Extract frames then write Parquet shards of one partition; finished work is kept.

    With one partition (the default) the dataset is committed here, unless ``--no-commit``;
    with more, ``sam2kf retrain commit`` merges them once all are complete.
    """
    from sam2_core.workflow import Location, commit_dataset, extract_videos, shard_partition

    num = args.num_partitions
    try:
        partition = data_partition(args.partition, num)
    except ValueError as e:
        print(f"sam2kf retrain data: {e}", file=sys.stderr)
        return 2
    if args.demo_if_empty and (not storage.exists(args.raw) or not storage.listdir(args.raw)):
        from sam2_core.data.prep.demo import write_demo_dataset

        log.info("no raw data at %s: writing the built-in demo dataset", args.raw)
        # Every partition's pod may get here at once: identical bytes, atomic writes.
        write_demo_dataset(dst=args.raw)
    frames, shards = Location(args.frames), Location(args.shards)
    extract_videos(
        raw_uri=args.raw,
        frames=frames,
        dataset_name="data",
        dataset_version="one-off",
        every=args.every,
        workers=args.workers,
        partition=partition,
        num_partitions=num,
    )
    shard_partition(
        frames=frames,
        shards=shards,
        partition=partition,
        num_partitions=num,
        shard_size_mb=args.shard_size_mb,
        val_fraction=args.val_fraction,
    )
    if num > 1 or args.no_commit:
        log.info("partition %d of %d complete at %s", partition, num, args.shards)
        return 0
    commit_dataset(partitions=[shards], shards=Location(args.shards), num_partitions=1)
    log.info("shards complete at %s", args.shards)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    """Wait until every partition of ``--shards`` is complete, then commit the dataset."""
    from sam2_core.data.prep.shard_commit import commit_shards, missing_partitions

    if args.num_partitions < 1:
        print("sam2kf retrain commit: --num-partitions must be >= 1", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while missing := missing_partitions(dst=args.shards, num_partitions=args.num_partitions):
        if time.monotonic() >= deadline:
            print(
                f"sam2kf retrain commit: {args.shards}: partitions {', '.join(map(str, missing))}"
                f" of {args.num_partitions} not complete after {args.timeout:.0f}s; rerun the "
                "data Job (finished partitions are kept), then this one",
                file=sys.stderr,
            )
            return 2
        log.info("waiting for partitions %s of %d", missing, args.num_partitions)
        time.sleep(args.poll)
    manifest = commit_shards(dst=args.shards, num_partitions=args.num_partitions)
    log.info(
        "committed %d partitions: %d videos, %d frames at %s",
        args.num_partitions,
        manifest.num_videos,
        manifest.num_frames,
        args.shards,
    )
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from sam2_core.launch.engines import ClusterEngine
    from sam2_core.workflow import training_run

    cfg = load_retrain_config(args.config_dir)
    spec = load_launch_spec(args.config_dir, namespace=args.namespace)
    run = training_run(run_id=args.run_id, shards_url=args.shards, output_dir=args.output_dir)
    if args.name:
        run = dataclasses.replace(run, name=args.name)
    engine = _engine(spec, poll_s=cfg.poll_s, api_client=None)
    if args.dry_run:
        if not isinstance(engine, ClusterEngine):
            raise SystemExit(f"--dry-run shows a cluster job; launch.json names {spec.engine!r}")
        _print_yaml(engine.manifest(spec, run))
    elif args.wait or not isinstance(engine, ClusterEngine):
        engine.run(spec, run)
    else:
        engine.submit(spec, run)
    return 0


def wait_for_path(path: str, *, timeout_s: float, poll_s: float = 10.0) -> None:
    """Block until ``path`` (any fsspec URL) exists; TimeoutError after ``timeout_s``."""
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Scheduled retraining on plain Kubernetes (the CronJob's program): extract + shard, then "
        "create (or attach to) the training job and follow it; or submit to KFP when configured."
    )
    sub = parser.add_subparsers(dest="retrain_command", required=True, metavar="STEP")

    p = sub.add_parser("cron", help="one scheduled run (KFP submit, or the workflow)")
    p.add_argument("--config-dir", required=True, help="mounted ConfigMap sam2kf-train-config")
    p.add_argument("--run-id", required=True, help="stable id of this run (the CronJob's Job name)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the job only")
    p.set_defaults(retrain_func=cmd_cron)

    p = sub.add_parser("data", help="extract frames and write Parquet shards (keeps finished work)")
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
    p.add_argument(
        "--num-partitions",
        type=int,
        default=1,
        help="the videos are split into this many partitions (an Indexed Job's completions)",
    )
    p.add_argument(
        "--partition",
        type=int,
        default=None,
        help=f"the partition to extract and shard (default ${COMPLETION_INDEX_ENV}, else 0)",
    )
    p.add_argument(
        "--no-commit",
        action="store_true",
        help="leave the commit to `sam2kf retrain commit` (always so with several partitions)",
    )
    p.set_defaults(retrain_func=cmd_data)

    p = sub.add_parser("commit", help="merge the complete shard partitions into the dataset")
    p.add_argument("--shards", required=True, help="the dataset folder the partitions wrote")
    p.add_argument("--num-partitions", type=int, required=True, help="partitions to merge")
    p.add_argument("--timeout", type=float, default=12 * 3600, help="seconds (default 12 h)")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between checks")
    p.set_defaults(retrain_func=cmd_commit)

    p = sub.add_parser("wait", help="wait until a path/URL exists (init container of jobs)")
    p.add_argument("--path", required=True, help="file or URL to wait for")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds (default 6 h)")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between checks")
    p.set_defaults(retrain_func=cmd_wait)

    p = sub.add_parser("launch", help="render and create (or attach to) the training job")
    p.add_argument("--config-dir", required=True, help="dir with launch.json")
    p.add_argument("--run-id", required=True, help="stable run id; the job name derives from it")
    p.add_argument("--name", default=None, help="explicit job name instead of the derived one")
    p.add_argument("--namespace", default=None, help="default: launch.json's, else $POD_NAMESPACE")
    p.add_argument("--shards", required=True, help="data.shards for sam2kf train")
    p.add_argument("--output-dir", required=True, help="trainer.output_dir for sam2kf train")
    p.add_argument("--wait", action="store_true", help="wait until the job finishes")
    p.add_argument("--dry-run", action="store_true", help="print the job only")
    p.set_defaults(retrain_func=cmd_launch)


def run(args: argparse.Namespace) -> int:
    return int(args.retrain_func(args))
