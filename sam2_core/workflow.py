"""The one fine-tuning workflow: extract -> shard -> train -> evaluate -> promote.

Every caller runs these functions: the KFP components (one component per step, wired by
``pipelines/finetune.py``; ``sam2kf run --local`` runs that pipeline through ``kfp.local``) and
the CronJob's ``sam2kf retrain``, which chains them with :func:`retrain`. The rules live here
once:

* **new videos only**: extract skips videos that another dataset version of the same name
  already holds (the registry's seen-video set); 0 new videos stops the workflow there;
* **partitions**: extract and shard may run as P partitions of the videos (a stable hash of the
  video id, :mod:`sam2_core.data.prep.partitions`), on as many pods; :func:`commit_dataset`
  then merges them into one dataset version and records its videos as seen; "0 new videos" is
  judged there, over all partitions;
* **retries resume**: extraction skips finished videos, sharding a complete shard set
  (``manifest.json`` present) only records it again, training attaches to the run's own job;
* **warm start**: ``init_checkpoint="champion"`` starts from the registry's champion;
* **promotion**: the challenger replaces the champion when its J&F on the same split is
  higher by the margin (compare-and-swap in :mod:`sam2_core.registry`).

Steps take *locations* (anything with ``.uri``, ``.path`` and ``.metadata``: a KFP artifact, or
a :class:`Location` fixed in advance) and resolve them to fsspec URLs with :func:`output_url` /
:func:`input_url`:

* on a cluster the artifact URI is ``gs://...`` / ``s3://...`` / ``minio://...``; steps read and
  write that URI directly with fsspec (so the training pods, which cannot see the launcher
  pod's local artifact folder, read and write the very same objects);
* with ``storage_root`` set (e.g. a PVC mount path, the alternative to object storage) outputs go
  to ``<storage_root>/<dataset>/<version>/...`` or ``<storage_root>/runs/<run>/...`` instead;
* locally (``kfp.local``) the URI is a plain path.

The URL actually used is stored as ``metadata["url"]`` on every output, and downstream steps
prefer it. The local ``.path`` of an output written remotely is created as an empty folder:
KFP uploads it after the step, which then adds nothing (a missing path would fail the upload).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sam2_core import storage
from sam2_core.data.prep.extract import extract_dataset
from sam2_core.data.prep.partitions import check_partition, in_partition, partition_label
from sam2_core.data.prep.shard_commit import commit_shards
from sam2_core.data.prep.shard_writer import write_shard_partition, write_shards
from sam2_core.data.readers.sav import list_raw_videos
from sam2_core.data.readers.shards import (
    MANIFEST,
    ShardIndex,
    ShardManifest,
    partition_manifest_name,
    shard_name,
)
from sam2_core.eval.vos import evaluate_model
from sam2_core.launch.engines import Engine, make_engine
from sam2_core.launch.spec import JobRun, LaunchSpec, forwarded_env
from sam2_core.model import released
from sam2_core.registry import ModelRecord, Registry
from sam2_core.train.config import load_train_config

REMOTE_SCHEMES = ("gs://", "s3://", "minio://", "gcs://")
#: value of ``init_checkpoint`` / ``model_uri`` meaning "the registry's champion"
CHAMPION = "champion"


class ArtifactLike(Protocol):
    """A KFP artifact, or a :class:`Location`: what a step reads or writes."""

    @property
    def uri(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def metadata(self) -> dict[str, Any]: ...


@dataclass
class Location:
    """A step output or input at a URL chosen by the caller (no KFP artifact store behind it)."""

    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metadata.setdefault("url", self.uri)

    @property
    def path(self) -> str:
        return self.uri


# ------------------------------------------------------------------------------- artifact URLs
def output_url(art: ArtifactLike, *, storage_root: str = "", key: str = "") -> str:
    """Where a step writes ``art``'s content; records it as ``metadata["url"]``."""
    if isinstance(art, Location):
        url = art.uri
    elif storage_root:
        url = storage.join(storage_root, key) if key else storage_root
        os.makedirs(art.path, exist_ok=True)
    elif art.uri.startswith(REMOTE_SCHEMES):
        url = art.uri
        os.makedirs(art.path, exist_ok=True)
    else:
        url = art.path
    art.metadata["url"] = url
    return url


def input_url(art: ArtifactLike) -> str:
    """Where an upstream step wrote ``art``'s content."""
    url = art.metadata.get("url") if art.metadata else None
    if url:
        return str(url)
    return art.uri if art.uri.startswith(REMOTE_SCHEMES) else art.path


def resolve_version(dataset_version: str, run_id: str) -> str:
    """``"auto"``/``""`` -> ``run-<run_id>``; anything else unchanged."""
    if dataset_version not in ("", "auto"):
        return dataset_version
    if not run_id:
        raise ValueError("dataset_version 'auto' needs the run id")
    return f"run-{run_id}"


# ------------------------------------------------------------------------------------- extract
def extract_videos(
    *,
    raw_uri: str,
    frames: ArtifactLike,
    dataset_name: str,
    dataset_version: str,
    registry_uri: str = "",
    run_id: str = "",
    every: int = 4,
    workers: int = 0,
    storage_root: str = "",
    partition: int = 0,
    num_partitions: int = 1,
) -> int:
    """Extract the videos of ``raw_uri`` that no other dataset version has processed.

    ``dataset_version="auto"`` names the version after the run (``run-<run_id>``), so every
    scheduled run gets its own version while a retried step of the same run keeps it. The
    version travels on as ``frames.metadata["dataset_version"]`` (then on the shards artifact).
    With ``num_partitions > 1`` only the new videos of partition ``partition`` are extracted
    (partitions may run at the same time, into the same folder or into their own).
    Returns the number of videos extracted; 0 = nothing new (in this partition; the workflow
    stops when no partition has any, see :func:`commit_dataset`).
    """
    check_partition(partition=partition, num_partitions=num_partitions)
    dataset_version = resolve_version(dataset_version, run_id)
    dst = output_url(
        frames, storage_root=storage_root, key=f"{dataset_name}/{dataset_version}/frames"
    )
    seen: set[str] = set()
    if registry_uri:
        seen = Registry(registry_uri).seen_videos(dataset_name, exclude_version=dataset_version)
    all_ids = [vid for vid, _ in list_raw_videos(raw_uri)]
    todo = [v for v in all_ids if v not in seen]
    mine = [v for v in todo if in_partition(v, partition=partition, num_partitions=num_partitions)]
    where = (
        f" (partition {partition} of {num_partitions}: {len(mine)})" if num_partitions > 1 else ""
    )
    print(
        f"[extract] {len(all_ids)} videos in {raw_uri}; {len(all_ids) - len(todo)} seen before; {len(todo)} to do{where}"
    )
    frames.metadata.update(
        {
            "dataset_name": dataset_name,
            "dataset_version": dataset_version,
            "new_videos": len(mine),
            "partition": partition,
            "num_partitions": num_partitions,
        }
    )
    if not mine:
        return 0
    # Only the new videos (of the partition); a retried step skips those it already finished.
    summary = extract_dataset(
        src=raw_uri,
        dst=dst,
        every=every,
        workers=workers,
        progress=False,
        videos=None if len(todo) == len(all_ids) else todo,
        partition=partition,
        num_partitions=num_partitions,
    )
    if summary.failed:
        print(f"[extract] failed videos (skipped): {summary.failed}", file=sys.stderr)
    if not summary.ok:
        raise RuntimeError(f"extract: no video of {raw_uri} could be extracted: {summary.failed}")
    frames.metadata["videos"] = len(summary.ok)
    return len(summary.ok)


# --------------------------------------------------------------------------------------- shard
def shard_videos(
    *,
    frames: ArtifactLike,
    shards: ArtifactLike,
    registry_uri: str = "",
    raw_uri: str = "",
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    storage_root: str = "",
) -> list[str]:
    """Pack the extracted frames into Parquet shards; record the version's videos as seen.

    Dataset name and version come from the frames (set by :func:`extract_videos`). A complete
    shard set already at the destination (a retried step) is kept. Returns the video ids.
    """
    dataset_name = str(frames.metadata["dataset_name"])
    dataset_version = str(frames.metadata["dataset_version"])
    dst = output_url(
        shards, storage_root=storage_root, key=f"{dataset_name}/{dataset_version}/shards"
    )
    if storage.exists(storage.join(dst, MANIFEST)):
        print(f"[shard] {dst} is complete already: kept")
    else:
        write_shards(
            src=input_url(frames),
            dst=dst,
            shard_size_mb=shard_size_mb,
            val_fraction=val_fraction,
            seed=seed,
        )
    shards.metadata.update({"dataset_name": dataset_name, "dataset_version": dataset_version})
    return record_dataset(
        step="shard",
        shards_url=dst,
        registry_uri=registry_uri,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        raw_uri=raw_uri,
    )


def record_dataset(
    *,
    step: str,
    shards_url: str,
    registry_uri: str,
    dataset_name: str,
    dataset_version: str,
    raw_uri: str,
) -> list[str]:
    """The committed dataset's video ids, recorded as seen in the registry (when there is one),
    so that later runs extract only videos no dataset version has processed."""
    videos = sorted({v.video_id for v in ShardIndex.open(shards_url).videos})
    if registry_uri:
        url = Registry(registry_uri).record_dataset_version(
            dataset_name=dataset_name,
            dataset_version=dataset_version,
            video_ids=videos,
            shards_url=shards_url,
            source_url=raw_uri,
        )
        print(
            f"[{step}] recorded {len(videos)} videos of {dataset_name}/{dataset_version} in {url}"
        )
    return videos


def partition_numbers(*, num_partitions: int) -> list[int]:
    """``[0, 1, ..., num_partitions - 1]``: the items of the pipeline's data fan-out."""
    check_partition(partition=0, num_partitions=num_partitions)
    return list(range(num_partitions))


def _committed(dst: str, num_partitions: int) -> bool:
    """Whether ``dst`` holds a dataset committed from ``num_partitions`` partitions."""
    url = storage.join(dst, MANIFEST)
    try:
        params = ShardManifest.from_json(storage.read_json(url), source=url).params
    except FileNotFoundError:  # never committed, or another partition has just removed it
        return False
    return int(params.get("num_partitions", 0)) == num_partitions


def shard_partition(
    *,
    frames: ArtifactLike,
    shards: ArtifactLike,
    partition: int,
    num_partitions: int,
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    storage_root: str = "",
) -> int:
    """Pack one partition of the extracted frames into Parquet shards (no commit, no record).

    Writes the partition's shard files and its manifest ``_partitions/pPPPP-of-NNNN.json``
    (:func:`sam2_core.data.prep.shard_writer.write_shard_partition`); :func:`commit_dataset`
    merges the partitions afterwards. A partition without new videos writes an empty partition
    manifest (the commit needs every partition). A dataset already committed from the same
    number of partitions (a retried or re-applied step) is kept as it is. Returns the number of
    videos in the partition, also stored as ``shards.metadata["videos"]``.
    """
    check_partition(partition=partition, num_partitions=num_partitions)
    dataset_name = str(frames.metadata["dataset_name"])
    dataset_version = str(frames.metadata["dataset_version"])
    dst = output_url(
        shards, storage_root=storage_root, key=f"{dataset_name}/{dataset_version}/shards"
    )
    label = partition_label(partition=partition, num_partitions=num_partitions)
    marker = storage.join(dst, partition_manifest_name(label))
    if _committed(dst, num_partitions) and storage.exists(marker):
        print(f"[shard] {dst} is committed already: partition {label} kept")
        count = sum(
            1
            for v in ShardIndex.open(dst).videos
            if in_partition(v.video_id, partition=partition, num_partitions=num_partitions)
        )
    else:
        # No new video in this partition: its extract step wrote nothing to read.
        none_new = int(frames.metadata.get("new_videos", 1)) == 0
        written = write_shard_partition(
            src=[] if none_new else input_url(frames),
            dst=dst,
            partition=partition,
            num_partitions=num_partitions,
            shard_size_mb=shard_size_mb,
            val_fraction=val_fraction,
            seed=seed,
        )
        count = len(written.videos)
        print(f"[shard] partition {label}: {count} videos in {len(written.shards)} shards")
    shards.metadata.update(
        {
            "dataset_name": dataset_name,
            "dataset_version": dataset_version,
            "partition": partition,
            "num_partitions": num_partitions,
            "videos": count,
        }
    )
    return count


def gather_partition(*, src: str, dst: str, partition: int, num_partitions: int) -> None:
    """Copy one partition's shard files, then its manifest (last), from ``src`` into ``dst``.

    Used by the commit when partitions wrote into their own artifact folders; on one object
    store the copy is server-side (fsspec ``copy``), so no shard bytes pass through the step.
    An incomplete partition (no manifest at ``src``) is not copied: the commit names it.
    """
    label = partition_label(partition=partition, num_partitions=num_partitions)
    marker = partition_manifest_name(label)
    if not storage.exists(storage.join(src, marker)):
        return
    prefix = shard_name(0, partition_label=label)[: -len("00000.parquet")]
    names = sorted(n for n in storage.listdir(src) if n.startswith(prefix))
    fs_src, path_src = storage.get_fs(src)
    fs_dst, path_dst = storage.get_fs(dst)
    storage.makedirs(storage.join(dst, marker).rsplit("/", 1)[0])
    for name in [*names, marker]:
        if type(fs_src) is type(fs_dst):
            fs_dst.copy(f"{path_src.rstrip('/')}/{name}", f"{path_dst.rstrip('/')}/{name}")
        else:
            storage.write_bytes_atomic(
                storage.join(dst, name), storage.read_bytes(storage.join(src, name))
            )


def commit_dataset(
    *,
    partitions: Sequence[ArtifactLike],
    shards: ArtifactLike,
    num_partitions: int,
    registry_uri: str = "",
    raw_uri: str = "",
    storage_root: str = "",
) -> int:
    """Merge the shard partitions into one dataset version; record its videos as seen.

    ``partitions`` are the outputs of :func:`shard_partition`, one per partition (any order).
    With 0 videos over all partitions nothing is committed or recorded and 0 is returned (the
    workflow stops there). Partitions written elsewhere than ``shards``' location are copied
    there first (:func:`gather_partition`); then
    :func:`sam2_core.data.prep.shard_commit.commit_shards` writes ``index.parquet`` and, last,
    ``manifest.json`` (refusing, with the missing partitions named, an incomplete set). The
    registry records the version only now, so a failed partition never marks videos as seen.
    Returns the number of videos in the dataset version.
    """
    check_partition(partition=0, num_partitions=num_partitions)
    if len(partitions) != num_partitions:
        raise ValueError(
            f"commit: {len(partitions)} shard partitions for num_partitions={num_partitions}; "
            "every partition's shard step must finish first"
        )
    dataset_name = str(partitions[0].metadata["dataset_name"])
    dataset_version = str(partitions[0].metadata["dataset_version"])
    dst = output_url(
        shards, storage_root=storage_root, key=f"{dataset_name}/{dataset_version}/shards"
    ).rstrip("/")
    shards.metadata.update({"dataset_name": dataset_name, "dataset_version": dataset_version})
    total = sum(int(p.metadata.get("videos", 0)) for p in partitions)
    if total == 0:
        print(
            f"[commit] no new videos in any of the {num_partitions} partitions: nothing to commit"
        )
        shards.metadata["videos"] = 0
        return 0
    storage.makedirs(dst)
    for p in partitions:
        src = input_url(p).rstrip("/")
        if src != dst:
            gather_partition(
                src=src,
                dst=dst,
                partition=int(p.metadata["partition"]),
                num_partitions=num_partitions,
            )
    manifest = commit_shards(dst=dst, num_partitions=num_partitions)
    print(
        f"[commit] {dataset_name}/{dataset_version}: {num_partitions} partitions, "
        f"{manifest.num_videos} videos, {manifest.num_frames} frames at {dst}"
    )
    videos = record_dataset(
        step="commit",
        shards_url=dst,
        registry_uri=registry_uri,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        raw_uri=raw_uri,
    )
    shards.metadata["videos"] = len(videos)
    return len(videos)


# --------------------------------------------------------------------------------------- train
def resolve_checkpoint(init_checkpoint: str, registry_uri: str, *, model_name: str = "") -> str:
    """``""`` -> no checkpoint; ``"champion"`` -> the registry champion's model, or before the
    first promotion Meta's released checkpoint of ``model_name``'s size (``"released"``; the
    initial weights for a model without released weights, such as ``tiny``)."""
    if init_checkpoint != CHAMPION:
        return init_checkpoint
    champ = Registry(registry_uri).champion() if registry_uri else None
    if champ is None:
        release = released.for_model(model_name)
        if release is not None:
            print(
                f"[train] no champion in the registry yet: starting from Meta's released {release.name}"
            )
            return released.RELEASED_FOR_MODEL
        print("[train] no champion in the registry yet: starting from the model's initial weights")
        return ""
    print(
        f"[train] warm start from champion {champ.model_uri} (run {champ.run_id}, J&F {champ.jf:.2f})"
    )
    return champ.model_uri


def checkpoint_cache(*, storage_root: str = "", registry_uri: str = "") -> str:
    """Where the pipeline keeps released checkpoints: ``$SAM2KF_CHECKPOINT_CACHE``, else next to
    the run's storage (``<storage_root>/cache/checkpoints`` or ``<registry>/cache/checkpoints``),
    so a cluster downloads each file once and the training pods read it from there."""
    if os.environ.get(released.CACHE_ENV):
        return os.environ[released.CACHE_ENV]
    if storage_root:
        return storage.join(storage_root, "cache", "checkpoints")
    if registry_uri:
        return storage.join(registry_uri, "cache", "checkpoints")
    return released.default_cache()


def training_run(
    *,
    run_id: str,
    shards_url: str,
    output_dir: str,
    model_name: str = "",
    checkpoint: str | None = None,
    model_overrides: Sequence[str] = (),
    max_steps: int = 0,
) -> JobRun:
    """One training run: its id and its ``sam2kf train`` overrides (keys fixed in CONTRACTS.md).

    ``model_name=""`` and ``checkpoint=None`` leave model and weights to the experiment and
    the spec's overrides; ``checkpoint=""`` means none (random initial weights).
    ``model_overrides`` (relative to the model node) are what the checkpoint's architecture
    needs, e.g. the SAM 2.0 flags of a SAM 2.0 file.
    """
    args = [f"model={model_name}"] if model_name else []
    if checkpoint is not None:
        args.append(f"model.checkpoint={checkpoint or 'null'}")
    args += [f"model.{o}" for o in model_overrides]
    args += [f"data.shards={shards_url}", f"trainer.output_dir={output_dir}"]
    if max_steps > 0:
        args.append(f"trainer.max_steps={max_steps}")
    return JobRun(run_id=run_id, train_args=args)


def launch_training(
    *,
    shards: ArtifactLike,
    model: ArtifactLike,
    run_id: str,
    launch: LaunchSpec | Mapping[str, Any],
    model_name: str = "",
    init_checkpoint: str | None = "",
    registry_uri: str = "",
    max_steps: int = 0,
    storage_root: str = "",
    engine: Engine | None = None,
) -> str:
    """Run ``sam2kf train`` on the spec's engine and wait; returns the final model's URL.

    ``launch`` is the launch spec (or its dict, as the KFP parameter carries it). The model
    location receives the training output directory: ``checkpoints/``, ``tensorboard/``,
    ``train_stats.jsonl`` and ``model_final.pt`` (official ``{"model": state_dict}``).
    ``init_checkpoint``: a URL, ``"champion"``, ``""`` (none) or None (the experiment's).
    ``engine`` replaces the one the spec names (e.g. a cluster engine with its own client).
    """
    spec = launch if isinstance(launch, LaunchSpec) else LaunchSpec.from_dict(launch)
    # Storage endpoints the launcher sees are what the training processes need as well.
    spec = dataclasses.replace(spec, env={**forwarded_env(os.environ), **spec.env})
    out_dir = output_url(model, storage_root=storage_root, key=f"runs/{run_id}/train")
    checkpoint: str | None = None
    init: released.ResolvedCheckpoint | None = None
    if init_checkpoint is not None:
        # A released checkpoint is fetched here, once, into the run's storage: the training
        # pods then load a plain file (no download per rank, no internet on the workers).
        init = released.resolve_checkpoint(
            resolve_checkpoint(init_checkpoint, registry_uri, model_name=model_name),
            model=model_name or None,
            cache=checkpoint_cache(storage_root=storage_root, registry_uri=registry_uri),
        )
        if init.release is not None:
            print(f"[train] initial weights: {init.describe()}")
        checkpoint = init.path
    run = training_run(
        run_id=run_id,
        shards_url=input_url(shards),
        output_dir=out_dir,
        model_name=model_name,
        checkpoint=checkpoint,
        model_overrides=init.overrides if init is not None else (),
        max_steps=max_steps,
    )
    # The overrides (pipeline parameter, ConfigMap) are checked here, before any pod starts: a
    # typo, an out-of-range value or a `_target_` outside the model's own classes is one line.
    load_train_config(spec.train_args(run.train_args))
    print(
        f"[train] engine={spec.engine} nodes={spec.num_nodes} x {spec.nproc_per_node} procs; "
        f"output {out_dir}"
    )
    (engine or make_engine(spec.engine)).run(spec, run)
    final = storage.join(out_dir, "model_final.pt")
    if not storage.exists(final):
        raise RuntimeError(f"training finished but {final} is missing")
    model.metadata.update(
        {
            "model_name": model_name,
            "model_uri": final,
            "tensorboard": storage.join(out_dir, "tensorboard"),
            "checkpoints": storage.join(out_dir, "checkpoints"),
            "run_id": run_id,
            # what the run started from, for the registry's record of the promotion
            "init_checkpoint": (init.release.name if init.release else init.path) if init else "",
            "init_checkpoint_sha256": (init.sha256 or "") if init else "",
        }
    )
    return final


# ------------------------------------------------------------------------------------ evaluate
def evaluate_on_shards(
    *,
    shards: ArtifactLike,
    results: ArtifactLike,
    metrics: ArtifactLike,
    report: ArtifactLike,
    model: ArtifactLike | None = None,
    model_uri: str = "",
    registry_uri: str = "",
    model_name: str = "tiny",
    device: str = "auto",
    split: str = "val",
    max_videos: int = 0,
) -> float:
    """Evaluate a model on the shards' ``split``; returns J&F, or -1.0 when there is no model.

    ``results`` receives the predictions, ``results.csv``, ``per_video.csv``, ``summary.json``;
    ``metrics`` the J&F numbers (shown in the KFP UI); ``report`` the self-contained HTML.

    The model is ``model`` (the trained challenger), else ``model_uri``, where ``"champion"``
    means the registry's champion (and -1.0 is returned before the first promotion).
    """
    if model is not None:
        uri = str(
            model.metadata.get("model_uri") or storage.join(input_url(model), "model_final.pt")
        )
        name = str(model.metadata.get("model_name") or model_name)
    else:
        uri, name = model_uri, model_name
    if uri == CHAMPION:
        champ = Registry(registry_uri).champion() if registry_uri else None
        if champ is None:
            print("[evaluate] no champion yet: nothing to evaluate")
            metrics.metadata["J&F"] = -1.0
            output_url(results)
            _write_report(
                report, _placeholder("No champion model yet: the first trained model is promoted.")
            )
            return -1.0
        uri, name = champ.model_uri, champ.model_name or model_name
    out = output_url(results)
    summary = evaluate_model(
        model=name,
        checkpoint=uri,
        data=input_url(shards),
        out=out,
        device=device,
        split=split,
        max_videos=max_videos or None,
    )
    jf = float(summary["J&F"])
    for key in ("J&F", "J", "F", "num_videos", "num_objects"):
        if key in summary:
            metrics.metadata[key] = float(summary[key])
    metrics.metadata.update({"model_uri": uri, "split": split})
    html = storage.join(out, "report.html")
    _write_report(
        report,
        storage.read_bytes(html)
        if storage.exists(html)
        else _placeholder(f"no report was written at {html}"),
    )
    print(f"[evaluate] {uri}: J&F {jf:.3f}")
    return jf


def _placeholder(text: str) -> bytes:
    return f"<!doctype html><html><body><p>{text}</p></body></html>\n".encode()


def _write_report(report: ArtifactLike, html: bytes) -> None:
    """The HTML output is one small file at ``report.path`` (KFP uploads it on a cluster)."""
    storage.write_bytes_atomic(report.path, html)


# ------------------------------------------------------------------------------------- promote
def promote_if_better(
    *,
    registry_uri: str,
    model: ArtifactLike,
    challenger_jf: float,
    champion_jf: float,
    margin: float,
    shards: ArtifactLike,
    run_id: str,
    decision: ArtifactLike | None = None,
    split: str = "val",
) -> bool:
    """Promote the challenger when it beats the champion (measured on the same split)."""
    reg = Registry(registry_uri)
    record = ModelRecord(
        model_uri=str(
            model.metadata.get("model_uri") or storage.join(input_url(model), "model_final.pt")
        ),
        jf=challenger_jf,
        dataset_name=str(shards.metadata["dataset_name"]),
        dataset_version=str(shards.metadata["dataset_version"]),
        split=split,
        run_id=run_id,
        model_name=str(model.metadata.get("model_name", "")),
    )
    # -1 means "no champion was found when it was evaluated".
    result = reg.promote(
        record, margin=margin, champion_jf=champion_jf if champion_jf >= 0 else None
    )
    print(
        ("[promote] PROMOTED: " if result.promote else "[promote] kept the champion: ")
        + result.reason
    )
    if decision is not None:
        decision.metadata.update({**result.to_dict(), "registry": registry_uri})
        text = json.dumps({**result.to_dict(), "challenger": record.to_dict()}, indent=2)
        storage.write_text_atomic(decision.path, text)
    return result.promote


# --------------------------------------------------------------------------- the whole chain
@dataclass
class RetrainResult:
    """What one :func:`retrain` did (``promoted`` is None when no registry was given)."""

    new_videos: int
    model_uri: str = ""
    challenger_jf: float | None = None
    champion_jf: float | None = None
    promoted: bool | None = None


def retrain(
    *,
    raw_uri: str,
    work_dir: str,
    output_dir: str,
    run_id: str,
    launch: LaunchSpec,
    registry_uri: str = "",
    dataset_name: str = "retrain",
    model_name: str = "",
    init_checkpoint: str | None = None,
    min_jf_gain: float = 0.0,
    every: int = 4,
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    eval_device: str = "auto",
    engine: Engine | None = None,
    data_partitions: int = 1,
) -> RetrainResult:
    """The steps of the pipeline in order, at fixed locations (the CronJob's run).

    Frames and shards go to ``work_dir/{frames,shards}``, the training output to
    ``output_dir``; the dataset version is the run id. With a registry, only unseen videos are
    extracted and the trained model is evaluated against the champion and promoted if better
    (evaluation output under ``work_dir/eval/``); without one, the workflow ends after training.
    Evaluation builds the model called ``model_name``, so a registry needs it.
    The data steps run as ``data_partitions`` partitions, one after the other in this process
    (the same partitioned flow as the pipeline's fan-out), then the commit.
    """
    if registry_uri and not model_name:
        raise ValueError("retrain with a registry needs model_name (the model to evaluate)")
    shards = Location(storage.join(work_dir, "shards"))
    model = Location(output_dir)
    parts: list[ArtifactLike] = []
    for p in partition_numbers(num_partitions=data_partitions):
        frames = Location(storage.join(work_dir, "frames"))
        extract_videos(
            raw_uri=raw_uri,
            frames=frames,
            dataset_name=dataset_name,
            dataset_version=run_id,
            registry_uri=registry_uri,
            run_id=run_id,
            every=every,
            partition=p,
            num_partitions=data_partitions,
        )
        part = Location(shards.uri)
        shard_partition(
            frames=frames,
            shards=part,
            partition=p,
            num_partitions=data_partitions,
            shard_size_mb=shard_size_mb,
            val_fraction=val_fraction,
        )
        parts.append(part)
    new = commit_dataset(
        partitions=parts,
        shards=shards,
        num_partitions=data_partitions,
        registry_uri=registry_uri,
        raw_uri=raw_uri,
    )
    if new == 0:
        return RetrainResult(new_videos=0)
    model_uri = launch_training(
        shards=shards,
        model=model,
        run_id=run_id,
        launch=launch,
        model_name=model_name,
        init_checkpoint=init_checkpoint,
        registry_uri=registry_uri,
        engine=engine,
    )
    if not registry_uri:
        return RetrainResult(new_videos=new, model_uri=model_uri)
    jf = {}
    for who in ("challenger", "champion"):
        where = storage.join(work_dir, "eval", who)
        jf[who] = evaluate_on_shards(
            shards=shards,
            results=Location(storage.join(where, "results")),
            metrics=Location(storage.join(where, "metrics")),
            report=Location(storage.join(where, "report.html")),
            model=model if who == "challenger" else None,
            model_uri=CHAMPION,
            registry_uri=registry_uri,
            model_name=model_name,
            device=eval_device,
        )
    promoted = promote_if_better(
        registry_uri=registry_uri,
        model=model,
        challenger_jf=jf["challenger"],
        champion_jf=jf["champion"],
        margin=min_jf_gain,
        shards=shards,
        run_id=run_id,
        decision=Location(storage.join(work_dir, "decision.json")),
    )
    return RetrainResult(new, model_uri, jf["challenger"], jf["champion"], promoted)
