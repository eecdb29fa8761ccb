"""Frame extraction: raw SA-V mp4 videos -> JPEG frame folders in the SA-V val/test layout.

Each video is streamed through PyAV (threaded decoding); every ``every``-th frame is converted
to RGB and written as JPEG named by its original frame index (``00000.jpg``, ``00004.jpg``...),
so the 6 fps annotations line up with the files. Output under DST::

    JPEGImages_24fps/<vid>/<frame:05d>.jpg
    Annotations_6fps/<vid>/<obj:03d>/<frame:05d>.png   (--write-masks; binary, 0/255)
    Annotations_json/<vid>_manual.json                 (the annotation JSON, byte for byte)
    _extract/<vid>.json                                (completion marker, written last)
    extract_summary.json                               (ok / failed / skipped videos)

Videos run in parallel worker processes (forkserver/spawn, so no filesystem object crosses a
fork). A video whose marker exists (with the same settings) is skipped; any other output of it
is stale and removed before it is redone. A bad video (zero bytes, corrupt, truncated, JSON that
disagrees with it) is reported by name in the summary and never stops the others. Remote
destinations are written to a local staging folder and uploaded before the marker.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sam2_core import storage
from sam2_core.data.prep.partitions import check_partition, in_partition, partition_label
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.rle import decode_rle
from sam2_core.data.readers.sav import (
    FRAMES_DIR,
    JSON_DIR,
    MARKER_DIR,
    MASKS_DIR,
    ann_every_of,
    annotation_url,
    list_raw_videos,
    load_annotation,
    object_ids,
    validate_annotation,
)
from sam2_core.data.readers.video import DecodeStats, decode_frames, file_size

SUMMARY_NAME = "extract_summary.json"
_MARKER_README = (
    "Completion markers of `sam2kf extract`: <vid>.json is written after every file of that\n"
    "video. Videos without a marker are incomplete and are ignored by sam2_core readers.\n"
)


@dataclass
class ExtractSummary:
    """Outcome of :func:`extract_dataset` (also written as ``DST/extract_summary.json``).

    ``ok``: videos complete in DST (including ``skipped`` ones finished by an earlier run);
    ``failed``: video (or file) -> reason; ``warnings``: video -> note (e.g. no annotation).
    """

    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["frames_per_second"] = round(self.frames_per_second, 2)
        return out


@dataclass(frozen=True)
class VideoTask:
    """Everything a worker process needs for one video (plain data: pickled to the worker)."""

    video_id: str
    mp4_url: str
    ann_url: str
    dst: str
    every: int = 4
    quality: int = 95
    write_masks: bool = False
    annotations: str = "manual"
    threads: int = 0

    def settings(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "quality": self.quality,
            "write_masks": self.write_masks,
            "annotations": self.annotations,
        }


def marker_url(dst: str, video_id: str) -> str:
    return storage.join(dst, MARKER_DIR, f"{video_id}.json")


def is_video_done(task: VideoTask) -> bool:
    """A video is done when its marker exists and was written with the same settings."""
    url = marker_url(task.dst, task.video_id)
    if not storage.exists(url):
        return False
    try:
        marker = storage.read_json(url)
    except (OSError, ValueError):
        return False
    return all(marker.get(k) == v for k, v in task.settings().items())


def _video_outputs(dst: str, vid: str) -> list[str]:
    return [
        storage.join(dst, FRAMES_DIR, vid),
        storage.join(dst, MASKS_DIR, vid),
        storage.join(dst, JSON_DIR, f"{vid}_manual.json"),
        storage.join(dst, JSON_DIR, f"{vid}_auto.json"),
        marker_url(dst, vid),
    ]


def remove_video_outputs(dst: str, vid: str) -> None:
    """Delete everything a (half-finished) earlier run wrote for ``vid``."""
    for url in _video_outputs(dst, vid):
        with contextlib.suppress(FileNotFoundError):
            storage.remove(url)


class _Staging:
    """Where a worker writes a video's files: DST itself (local) or a temp folder (remote).

    Files become visible to readers only through the marker, so direct local writes are safe.
    """

    def __init__(self, dst: str) -> None:
        self.dst = dst
        self.remote = not storage.is_local(dst)
        self.root = (
            tempfile.mkdtemp(prefix="sam2kf-extract-") if self.remote else storage.get_fs(dst)[1]
        )
        self.written: list[str] = []

    def path(self, rel: str) -> str:
        """Local file path for a DST-relative name (parent folder created)."""
        p = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        self.written.append(rel)
        return p

    def upload(self) -> None:
        if not self.remote or not self.written:
            return
        fs, base = storage.get_fs(self.dst)
        lpaths = [os.path.join(self.root, r) for r in self.written]
        rpaths = [f"{base.rstrip('/')}/{r}" for r in self.written]
        fs.put(lpaths, rpaths)

    def close(self) -> None:
        if self.remote:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def _local_copy(url: str) -> Iterator[str]:
    """A local path for ``url``: itself when local, else a downloaded temp copy."""
    if storage.is_local(url):
        yield storage.get_fs(url)[1]
        return
    fs, path = storage.get_fs(url)
    tmpdir = tempfile.mkdtemp(prefix="sam2kf-src-")
    try:
        local = os.path.join(tmpdir, os.path.basename(path))
        fs.get(path, local)
        yield local
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _load_json(url: str) -> tuple[bytes, dict[str, Any]] | None:
    """Raw bytes and parsed content of an SA-V annotation JSON, or None when absent."""
    if not storage.exists(url):
        return None
    return storage.read_bytes(url), load_annotation(url)


def extract_video(task: VideoTask) -> tuple[int, str | None]:
    """Extract one video; returns ``(kept frames, warning or None)``; DataError on bad input."""
    if file_size(task.mp4_url) == 0:
        raise DataError(f"{task.mp4_url}: zero-byte video file")
    loaded = _load_json(task.ann_url)
    ann = loaded[1] if loaded else None
    if ann is not None and "video_id" in ann and str(ann["video_id"]) != task.video_id:
        raise DataError(f"{task.ann_url}: video_id {ann['video_id']!r} does not match the mp4 name")
    remove_video_outputs(task.dst, task.video_id)
    stage = _Staging(task.dst)
    try:
        with _local_copy(task.mp4_url) as local:
            kept, total, (h, w) = _write_frames(task, local, ann, stage)
        if loaded is not None:
            raw, ann = loaded
            validate_annotation(ann, source=task.ann_url, frame_count=total, height=h, width=w)
            if task.write_masks:
                _write_masks(task, ann, total, stage)
            with open(stage.path(f"{JSON_DIR}/{task.video_id}_{task.annotations}.json"), "wb") as f:
                f.write(raw)
        stage.upload()
    except BaseException:
        remove_video_outputs(task.dst, task.video_id)  # never leave stale partial output
        raise
    finally:
        stage.close()
    marker = {"video_id": task.video_id, "frames": kept, "frame_count": total, **task.settings()}
    marker.update({"height": h, "width": w, "source": task.mp4_url})
    storage.write_json_atomic(marker_url(task.dst, task.video_id), marker)
    return kept, (None if loaded is not None else f"no annotation file {task.ann_url}")


def _write_frames(
    task: VideoTask, local: str, ann: dict[str, Any] | None, stage: _Staging
) -> tuple[int, int, tuple[int, int]]:
    """Decode ``local`` and write the kept frames; returns (kept, total frames, (H, W)).

    JPEG encoding runs on a helper thread (Pillow releases the GIL) while the next frames
    decode, so decoding and encoding overlap.
    """
    every, quality = task.every, task.quality
    stats = DecodeStats()
    size: tuple[int, int] | None = None
    kept = 0
    pending: deque[cf.Future[None]] = deque()
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        frames = decode_frames(
            local,
            keep=lambda i: i % every == 0,
            threads=task.threads,
            stats=stats,
            skip_unused=every > 1,
        )
        for idx, img in frames:
            if size is None:
                size = (img.height, img.width)
                if ann is not None:  # fail before decoding everything if the JSON disagrees
                    validate_annotation(
                        ann,
                        source=task.ann_url,
                        frame_count=stats.header_frames or None,
                        height=size[0],
                        width=size[1],
                    )
            path = stage.path(f"{FRAMES_DIR}/{task.video_id}/{idx:05d}.jpg")
            pending.append(pool.submit(img.save, path, "JPEG", quality=quality))
            kept += 1
            while len(pending) > 2:  # bound memory: a few frames in flight
                pending.popleft().result()
        for fut in pending:
            fut.result()
    if size is None:
        raise DataError(f"{task.mp4_url}: video has no decodable frames")
    return kept, stats.decoded, size


def _write_masks(task: VideoTask, ann: dict[str, Any], total: int, stage: _Staging) -> None:
    """Per-object binary PNGs for annotated frames that have an extracted image."""
    from PIL import Image

    step = ann_every_of(ann)
    ids = object_ids(ann)
    for i, entry in enumerate(ann["masklet"]):
        fidx = i * step
        if entry is None or fidx >= total or fidx % task.every:
            continue
        for oid, rle in zip(ids, entry):
            if rle is None:
                continue
            img = Image.fromarray(decode_rle(rle).astype("uint8") * 255, mode="L")
            img.save(stage.path(f"{MASKS_DIR}/{task.video_id}/{oid:03d}/{fidx:05d}.png"))


# ----------------------------------------------------------------------------- dataset level
def _run_task(task: VideoTask) -> dict[str, Any]:
    """Worker entry point: never raises, so one bad video cannot stop the pool."""
    t0 = time.perf_counter()
    try:
        kept, warning = extract_video(task)
    except Exception as e:  # reported by name in the summary
        return {"video_id": task.video_id, "error": _reason(e)}
    return {
        "video_id": task.video_id,
        "frames": kept,
        "warning": warning,
        "seconds": time.perf_counter() - t0,
    }


def _reason(e: Exception) -> str:
    if isinstance(e, DataError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def plan_tasks(
    *,
    src: str,
    dst: str,
    every: int,
    quality: int,
    write_masks: bool,
    annotations: str,
    problems: dict[str, str],
) -> list[VideoTask]:
    """One task per ``*.mp4`` in SRC (bad names go to ``problems``)."""
    found = list_raw_videos(src, errors=problems)
    if not found and not problems:
        raise DataError(f"{src}: empty dataset (no *.mp4 videos found)")
    return [
        VideoTask(
            video_id=vid,
            mp4_url=mp4,
            ann_url=annotation_url(mp4, vid, annotations),
            dst=dst,
            every=every,
            quality=quality,
            write_masks=write_masks,
            annotations=annotations,
        )
        for vid, mp4 in found
    ]


def _pool_context() -> multiprocessing.context.BaseContext:
    # Never fork: a forked child would inherit gcsfs/aiohttp state of the parent.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _init_worker(environ: dict[str, str]) -> None:
    """Give workers the caller's current environment (credentials, emulator hosts): a
    forkserver started earlier would otherwise hand out an older copy."""
    os.environ.update(environ)


def _results(tasks: list[VideoTask], workers: int) -> Iterator[dict[str, Any]]:
    """Run tasks in this process (workers=0) or in a process pool, yielding as they finish."""
    if workers <= 0 or len(tasks) <= 1:
        for t in tasks:
            yield _run_task(t)
        return
    pool = cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(dict(os.environ),),
    )
    with pool:
        futures = [pool.submit(_run_task, t) for t in tasks]
        for fut in cf.as_completed(futures):
            yield fut.result()


def extract_dataset(
    *,
    src: str,
    dst: str,
    every: int = 4,
    quality: int = 95,
    write_masks: bool = False,
    workers: int = 0,
    annotations: str = "manual",
    progress: bool = True,
    videos: Sequence[str] | None = None,
    partition: int = 0,
    num_partitions: int = 1,
) -> ExtractSummary:
    """Extract the videos of an SA-V raw dataset at SRC into the SA-V frame layout at DST.

    Args:
        src, dst: local paths or fsspec URLs (gs://, s3://, ...).
        every: keep frames whose index is a multiple of this (4 = SA-V's 6 fps annotations).
        quality: JPEG quality (95 = OpenCV's default, used by Meta's extraction script).
        write_masks: also write per-object binary PNGs (Annotations_6fps).
        workers: processes (0 = run in this process; each worker decodes one video at a time).
        annotations: "manual" or "auto" JSON to copy (and write masks from).
        videos: extract only these video ids (None = all). An id without ``<id>.mp4`` in SRC is
            reported in ``failed``; problems of files outside the selection are not reported.
            Incremental runs pass the ids no earlier dataset version has processed.
        partition, num_partitions: extract only the videos (of the selection) whose id hashes
            into this partition (:func:`sam2_core.data.prep.partitions.partition_of`); problems
            are reported only for the partition's own files. Partitions write disjoint videos
            into the same DST and may run at the same time on different machines.

    Returns the summary; it is also written to ``DST/extract_summary.json`` (with partitions:
    ``DST/extract_summary-pPPPP-of-NNNN.json``, see :func:`summary_name`). Bad videos are in
    ``failed`` (the caller turns that into a non-zero exit status).
    """
    if every < 1 or not 1 <= quality <= 100:
        raise ValueError("every must be >= 1 and quality within 1..100")
    check_partition(partition=partition, num_partitions=num_partitions)
    t0 = time.perf_counter()
    summary = ExtractSummary()
    tasks = plan_tasks(
        src=src,
        dst=dst,
        every=every,
        quality=quality,
        write_masks=write_masks,
        annotations=annotations,
        problems=summary.failed,
    )
    if videos is not None:
        tasks = _select(tasks, videos, src=src, failed=summary.failed)
    if num_partitions > 1:
        tasks = _own_partition(tasks, summary.failed, partition, num_partitions)
    # Created before any frame is written: from now on readers of DST show only the videos
    # that have a completion marker, never a half-extracted one.
    storage.write_text_atomic(storage.join(dst, MARKER_DIR, "README.txt"), _MARKER_README)
    todo = []
    for t in tasks:
        if is_video_done(t):
            summary.skipped.append(t.video_id)
        else:
            todo.append(t)
    cpus = os.cpu_count() or 1
    workers = min(workers, len(todo))
    threads = max(1, cpus // workers) if workers > 0 else 0
    todo = [VideoTask(**{**asdict(t), "threads": threads}) for t in todo]
    _drive(todo, workers, summary, progress=progress, t0=t0)
    summary.ok = sorted(set(summary.skipped) | set(summary.ok))
    summary.seconds = time.perf_counter() - t0
    name = summary_name(partition=partition, num_partitions=num_partitions)
    storage.write_json_atomic(storage.join(dst, name), summary.to_json())
    return summary


def summary_name(*, partition: int = 0, num_partitions: int = 1) -> str:
    """File name of the extraction summary (one per partition when there are several)."""
    if num_partitions == 1:
        return SUMMARY_NAME
    label = partition_label(partition=partition, num_partitions=num_partitions)
    return f"{SUMMARY_NAME[: -len('.json')]}-{label}.json"


def _own_partition(
    tasks: list[VideoTask], failed: dict[str, str], partition: int, num_partitions: int
) -> list[VideoTask]:
    """The tasks of this partition; problems of other partitions' files are theirs to report."""

    def mine(name: str) -> bool:
        stem = name.rsplit("/", 1)[-1]
        stem = stem[: -len(".mp4")] if stem.endswith(".mp4") else stem
        return in_partition(stem, partition=partition, num_partitions=num_partitions)

    for name in [n for n in failed if not mine(n)]:
        del failed[name]
    return [t for t in tasks if mine(t.video_id)]


def _select(
    tasks: list[VideoTask], videos: Sequence[str], *, src: str, failed: dict[str, str]
) -> list[VideoTask]:
    """The tasks of ``videos`` (in SRC order); unknown ids and their problems go to ``failed``."""
    if isinstance(videos, str):
        raise TypeError("videos must be a sequence of video ids, not one string")
    wanted = set(videos)
    for name in list(failed):  # keys are mp4 URLs: keep only problems of selected videos
        stem = name.rsplit("/", 1)[-1][: -len(".mp4")]
        if stem not in wanted:
            del failed[name]
    by_id = {t.video_id: t for t in tasks}
    for vid in sorted(wanted - set(by_id)):
        if not any(k.rsplit("/", 1)[-1] == f"{vid}.mp4" for k in failed):
            failed[vid] = f"{src}: no video {vid}.mp4 (requested in videos)"
    return [t for t in tasks if t.video_id in wanted]


def _drive(
    todo: list[VideoTask], workers: int, summary: ExtractSummary, *, progress: bool, t0: float
) -> None:
    from tqdm import tqdm

    with tqdm(total=len(todo), unit="video", desc="extract", disable=not progress) as bar:
        for res in _results(todo, workers):
            vid = res["video_id"]
            if "error" in res:
                summary.failed[vid] = res["error"]
            else:
                summary.ok.append(vid)
                summary.frames += int(res["frames"])
                if res.get("warning"):
                    summary.warnings[vid] = res["warning"]
            elapsed = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                frames_per_s=f"{summary.frames / elapsed:.1f}", failed=len(summary.failed)
            )
            bar.update(1)


def load_summary(dst: str, *, partition: int = 0, num_partitions: int = 1) -> dict[str, Any]:
    """The extraction summary of a destination (of one partition when there are several)."""
    name = summary_name(partition=partition, num_partitions=num_partitions)
    return dict(json.loads(storage.read_text(storage.join(dst, name))))
