"""Pipeline steps: the one call each KFP component makes (components/ hold only wiring).

Each step takes KFP artifact objects (anything with ``.uri``, ``.path`` and ``.metadata``) and
plain parameters, and resolves them to fsspec URLs with :func:`output_url`/:func:`input_url`:

* on a cluster the artifact URI is ``gs://...`` / ``s3://...`` / ``minio://...``; steps read and
  write that URI directly with fsspec (so the PyTorchJob pods, which cannot see the launcher
  pod's local artifact folder, read and write the very same objects);
* with ``storage_root`` set (e.g. a PVC mount path, the alternative to object storage) outputs go
  to ``<storage_root>/<dataset>/<version>/...`` or ``<storage_root>/runs/<run>/...`` instead;
* locally (``kfp.local``) the URI is a plain path.

The URL actually used is stored as ``metadata["url"]`` on every output artifact, and downstream
steps prefer it. The local ``.path`` of an output written remotely is created as an empty folder:
KFP uploads it after the step, which then adds nothing (a missing path would fail the upload).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sam2_core import storage

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("gs://", "s3://", "minio://", "gcs://")
#: value of ``init_checkpoint`` meaning "warm-start from the registry's champion"
CHAMPION = "champion"


class ArtifactLike(Protocol):
    uri: str
    path: str
    metadata: dict[str, Any]


# ------------------------------------------------------------------------------- artifact URLs
def output_url(art: ArtifactLike, *, storage_root: str = "", key: str = "") -> str:
    """Where a step writes ``art``'s content; records it as ``metadata["url"]``."""
    if storage_root:
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


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(fn).parameters


# ------------------------------------------------------------------------------------- extract
def extract_step(
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
) -> int:
    """Extract the videos of ``raw_uri`` that no other dataset version has processed.

    ``dataset_version="auto"`` names the version after the run (``run-<run_id>``), so every
    scheduled run gets its own version while a retried step of the same run keeps it. The
    version travels on as ``frames.metadata["dataset_version"]`` (then on the shards artifact).
    Returns the number of videos extracted; 0 = nothing new (the pipeline stops there).
    """
    from sam2_core.data.extract import extract_dataset
    from sam2_core.data.sav import list_raw_videos
    from sam2_core.registry import Registry

    dataset_version = resolve_version(dataset_version, run_id)
    dst = output_url(
        frames, storage_root=storage_root, key=f"{dataset_name}/{dataset_version}/frames"
    )
    seen: set[str] = set()
    if registry_uri:
        seen = Registry(registry_uri).seen_videos(dataset_name, exclude_version=dataset_version)
    all_ids = [vid for vid, _ in list_raw_videos(raw_uri)]
    todo = [v for v in all_ids if v not in seen]
    print(
        f"[extract] {len(all_ids)} videos in {raw_uri}; {len(all_ids) - len(todo)} seen before; {len(todo)} to do"
    )
    frames.metadata.update(
        {"dataset_name": dataset_name, "dataset_version": dataset_version, "new_videos": len(todo)}
    )
    if not todo:
        return 0
    # Only the new videos; a retried step skips those it already finished.
    summary = extract_dataset(
        src=raw_uri,
        dst=dst,
        every=every,
        workers=workers,
        progress=False,
        videos=None if len(todo) == len(all_ids) else todo,
    )
    if summary.failed:
        print(f"[extract] failed videos (skipped): {summary.failed}", file=sys.stderr)
    if not summary.ok:
        raise RuntimeError(f"extract: no video of {raw_uri} could be extracted: {summary.failed}")
    frames.metadata["videos"] = len(summary.ok)
    return len(summary.ok)


def resolve_version(dataset_version: str, run_id: str) -> str:
    """``"auto"``/``""`` -> ``run-<run_id>``; anything else unchanged."""
    if dataset_version not in ("", "auto"):
        return dataset_version
    if not run_id:
        raise ValueError("dataset_version 'auto' needs the run id")
    return f"run-{run_id}"


# --------------------------------------------------------------------------------------- shard
def shard_step(
    *,
    frames: ArtifactLike,
    shards: ArtifactLike,
    registry_uri: str = "",
    raw_uri: str = "",
    shard_size_mb: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    storage_root: str = "",
) -> None:
    """Pack the extracted frames into Parquet shards; record the version's videos as seen.

    Dataset name and version come from the frames artifact (set by :func:`extract_step`).
    """
    from sam2_core.data.shards import write_shards
    from sam2_core.registry import Registry

    dataset_name = str(frames.metadata["dataset_name"])
    dataset_version = str(frames.metadata["dataset_version"])
    src = input_url(frames)
    dst = output_url(
        shards, storage_root=storage_root, key=f"{dataset_name}/{dataset_version}/shards"
    )
    manifest = write_shards(
        src=src, dst=dst, shard_size_mb=shard_size_mb, val_fraction=val_fraction, seed=seed
    )
    shards.metadata.update({"dataset_name": dataset_name, "dataset_version": dataset_version})
    videos = _manifest_videos(manifest, dst)
    if registry_uri:
        url = Registry(registry_uri).record_dataset_version(
            dataset_name=dataset_name,
            dataset_version=dataset_version,
            video_ids=videos,
            shards_url=dst,
            source_url=raw_uri,
        )
        print(f"[shard] recorded {len(videos)} videos of {dataset_name}/{dataset_version} in {url}")


def _manifest_videos(manifest: Any, dst: str) -> list[str]:
    """Video ids in a shard set (from the returned manifest, else from index.parquet)."""
    for attr in ("video_ids", "videos"):
        value = getattr(manifest, attr, None)
        if value:
            return [str(v if isinstance(v, str) else getattr(v, "video_id", v)) for v in value]
    import pyarrow.parquet as pq

    fs, path = storage.get_fs(storage.join(dst, "index.parquet"))
    with fs.open(path, "rb") as f:
        return sorted(
            {str(v) for v in pq.read_table(f, columns=["video_id"]).column("video_id").to_pylist()}
        )


# --------------------------------------------------------------------------------------- train
def resolve_checkpoint(init_checkpoint: str, registry_uri: str) -> str:
    """``""`` -> no checkpoint; ``"champion"`` -> the registry champion's model (or none yet)."""
    if init_checkpoint != CHAMPION:
        return init_checkpoint
    from sam2_core.registry import Registry

    champ = Registry(registry_uri).champion() if registry_uri else None
    if champ is None:
        print("[train] no champion in the registry yet: starting from the model's initial weights")
        return ""
    print(
        f"[train] warm start from champion {champ.model_uri} (run {champ.run_id}, J&F {champ.jf:.2f})"
    )
    return champ.model_uri


def train_args(
    *,
    model_name: str,
    checkpoint: str,
    shards_url: str,
    output_dir: str,
    max_steps: int,
    experiment: str = "",
    overrides: str = "",
) -> list[str]:
    """Hydra overrides for ``sam2kf train`` (config keys fixed in CONTRACTS.md)."""
    from sam2_core.launch.pytorchjob import split_overrides

    args = [f"experiment={experiment}"] if experiment else []
    args += [
        f"model={model_name}",
        f"model.checkpoint={checkpoint or 'null'}",
        f"data.shards={shards_url}",
        f"trainer.output_dir={output_dir}",
    ]
    if max_steps > 0:
        args.append(f"trainer.max_steps={max_steps}")
    return args + split_overrides(overrides)


def train_step(
    *,
    shards: ArtifactLike,
    model: ArtifactLike,
    run_id: str,
    backend: str = "pytorchjob",
    model_name: str = "tiny",
    init_checkpoint: str = "",
    registry_uri: str = "",
    experiment: str = "",
    overrides: str = "",
    max_steps: int = 0,
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    gpus_per_process: int = 0,
    timeout_hours: float = 72.0,
    namespace: str = "",
    image: str = "",
    service_account: str = "sam2kf-trainer",
    cpu: str = "4",
    memory: str = "16Gi",
    pvc_claim: str = "",
    pvc_mount_path: str = "/data",
    storage_secret: str = "",
    node_selector: Mapping[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    storage_root: str = "",
) -> str:
    """Run ``sam2kf train`` on ``backend`` ("pytorchjob" or "local"); returns the model URL.

    The model artifact is the training output directory: ``checkpoints/``, ``tensorboard/``,
    ``train_stats.jsonl`` and ``model_final.pt`` (official ``{"model": state_dict}``).
    """
    from sam2_core.launch.launcher import (
        ClusterOptions,
        LocalBackend,
        PyTorchJobBackend,
        TrainRequest,
    )

    out_dir = output_url(model, storage_root=storage_root, key=f"runs/{run_id}/train")
    req = TrainRequest(
        run_id=run_id,
        train_args=train_args(
            model_name=model_name,
            checkpoint=resolve_checkpoint(init_checkpoint, registry_uri),
            shards_url=input_url(shards),
            output_dir=out_dir,
            max_steps=max_steps,
            experiment=experiment,
            overrides=overrides,
        ),
        num_nodes=num_nodes,
        nproc_per_node=nproc_per_node,
        gpus_per_node=gpus_per_process * nproc_per_node,
        env=_storage_env(),
        timeout_s=timeout_hours * 3600.0,
    )
    print(f"[train] backend={backend} nodes={num_nodes} x {nproc_per_node} procs; output {out_dir}")
    if backend == "local":
        LocalBackend().run(req)
    elif backend == "pytorchjob":
        options = ClusterOptions(
            namespace=namespace or _pod_namespace(),
            image=image,
            service_account=service_account,
            cpu=cpu,
            memory=memory,
            pvc_claim=pvc_claim or None,
            pvc_mount_path=pvc_mount_path,
            node_selector=dict(node_selector or {}),
            tolerations=list(tolerations or []),
            secret_env=_secret_env(storage_secret),
        )
        PyTorchJobBackend(options).run(req)
    else:
        raise ValueError(f"launcher backend must be 'pytorchjob' or 'local', not {backend!r}")
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
        }
    )
    return final


def _pod_namespace() -> str:
    sa_ns = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(sa_ns):
        with open(sa_ns) as f:
            return f.read().strip()
    return "default"


#: Storage variables the launcher step forwards to the training processes (values, not secrets
#: by reference, only for the local backend; PyTorchJob pods get secrets via secretKeyRef).
_FORWARD_ENV = (
    "AWS_ENDPOINT_URL",
    "MINIO_ENDPOINT",
    "AWS_REGION",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
)


def _storage_env() -> dict[str, str]:
    return {k: os.environ[k] for k in _FORWARD_ENV if os.environ.get(k)}


def _secret_env(secret: str) -> dict[str, tuple[str, str]]:
    """KFP's default MinIO secret layout (keys ``accesskey``/``secretkey``) as AWS_* env."""
    if not secret:
        return {}
    return {
        "AWS_ACCESS_KEY_ID": (secret, "accesskey"),
        "AWS_SECRET_ACCESS_KEY": (secret, "secretkey"),
    }


# ------------------------------------------------------------------------------------ evaluate
def evaluate_step(
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

    The model is ``model`` (an artifact), else ``model_uri``, where ``"champion"`` means the
    registry's champion (and -1.0 is returned before the first promotion).
    """
    from sam2_core.eval.vos import evaluate_model

    uri = (
        str(model.metadata.get("model_uri") or storage.join(input_url(model), "model_final.pt"))
        if model
        else model_uri
    )
    name = str(model.metadata.get("model_name") or model_name) if model else model_name
    if uri == CHAMPION:
        from sam2_core.registry import Registry

        champ = Registry(registry_uri).champion() if registry_uri else None
        if champ is None:
            print("[evaluate] no champion yet: nothing to evaluate")
            metrics.metadata["J&F"] = -1.0
            output_url(results)
            _write_placeholder_report(
                report, "No champion model yet: the first trained model is promoted."
            )
            return -1.0
        uri, name = champ.model_uri, champ.model_name or model_name
    out = output_url(results)
    kwargs: dict[str, Any] = {
        "model": name,
        "checkpoint": uri,
        "data": input_url(shards),
        "out": out,
        "device": device,
    }
    if _accepts(evaluate_model, "split"):
        kwargs["split"] = split
    if max_videos and _accepts(evaluate_model, "max_videos"):
        kwargs["max_videos"] = max_videos
    summary = evaluate_model(**kwargs)
    jf = float(summary["J&F"])
    for key in ("J&F", "J", "F", "num_videos", "num_objects"):
        if key in summary:
            metrics.metadata[key] = float(summary[key])
    metrics.metadata.update({"model_uri": uri, "split": split})
    _copy_report(storage.join(out, "report.html"), report)
    print(f"[evaluate] {uri}: J&F {jf:.3f}")
    return jf


def _copy_report(src: str, report: ArtifactLike) -> None:
    """The HTML artifact is one small file at ``report.path`` (KFP uploads it on a cluster)."""
    if not storage.exists(src):
        _write_placeholder_report(report, f"no report was written at {src}")
        return
    os.makedirs(os.path.dirname(report.path) or ".", exist_ok=True)
    with open(report.path, "wb") as f:
        f.write(storage.read_bytes(src))


def _write_placeholder_report(report: ArtifactLike, text: str) -> None:
    os.makedirs(os.path.dirname(report.path) or ".", exist_ok=True)
    with open(report.path, "w") as f:
        f.write(f"<!doctype html><html><body><p>{text}</p></body></html>\n")


# ------------------------------------------------------------------------------------- promote
def promote_step(
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
    from sam2_core.registry import ModelRecord, Registry

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
        os.makedirs(os.path.dirname(decision.path) or ".", exist_ok=True)
        with open(decision.path, "w") as f:
            json.dump({**result.to_dict(), "challenger": record.to_dict()}, f, indent=2)
    return result.promote
