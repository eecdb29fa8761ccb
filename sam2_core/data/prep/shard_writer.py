"""Writing Parquet shards (the format and its reader: :mod:`sam2_core.data.readers.shards`).

Row groups are closed at a video boundary once they reach half of ``row_group_mb`` and inside a
video when they reach it, so a clip of 8 frames touches one or two of them. Videos go to
``val`` when a hash of (seed, video id) falls below ``val_fraction`` (a reader may also have set
the split itself); with ``val_fraction > 0`` and two or more videos, at least one video is in
``val``.

Nothing partial is ever left looking complete: every file is written under a temporary name
(local) or as one upload (object stores), ``manifest.json`` is removed first and written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from sam2_core import storage
from sam2_core.data.prep.partitions import check_partition, in_partition, partition_label
from sam2_core.data.readers.formats import iter_videos
from sam2_core.data.readers.integrity import footer_sha256_url
from sam2_core.data.readers.records import DataError, VideoRecord, check_video_id
from sam2_core.data.readers.rle import rle_area
from sam2_core.data.readers.shards import (
    FRAME_SCHEMA,
    INDEX,
    INDEX_SCHEMA,
    MANIFEST,
    PARTITIONS_DIR,
    PartitionManifest,
    ShardInfo,
    ShardManifest,
    VideoEntry,
    partition_manifest_name,
    shard_name,
)

log = logging.getLogger(__name__)

#: leaf columns of ``objects`` (compression is set per leaf)
_OBJ_LEAVES = ("objects.list.element.obj_id", "objects.list.element.counts")


def _split_hash(video_id: str, seed: int) -> float:
    """A stable uniform number in ``[0, 1)`` for (seed, video id)."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(video_id: str, *, val_fraction: float, seed: int = 0) -> str:
    """``"val"`` for a stable hashed ``val_fraction`` of video ids, else ``"train"``."""
    return "val" if _split_hash(video_id, seed) < val_fraction else "train"


def assign_splits(
    records: Sequence[VideoRecord], *, val_fraction: float, seed: int = 0
) -> dict[str, str]:
    """Split of every video: the reader's split when it set one other than ``train``, else
    :func:`assign_split` (see :func:`assign_splits_by_id`)."""
    return assign_splits_by_id(
        {r.video_id: r.split for r in records}, val_fraction=val_fraction, seed=seed
    )


def assign_splits_by_id(
    reader_splits: Mapping[str, str],
    *,
    val_fraction: float,
    seed: int = 0,
    at_least_one_val: bool = True,
) -> dict[str, str]:
    """Split of every video id, given the split its reader set (``""`` or ``train`` = none).

    Small datasets could hash every video to ``train``; so when ``val_fraction > 0`` and no
    video ends up in ``val``, the hashed video with the smallest hash (the one closest to the
    threshold) goes to ``val``, provided at least one other video stays in ``train``. The result
    depends only on the set of video ids and ``seed`` (deterministic, order independent).
    A data partition sees only its own videos, so it passes ``at_least_one_val=False`` and the
    commit applies the rule to the whole set.
    """
    splits: dict[str, str] = {}
    hashed: list[str] = []
    for vid, reader_split in reader_splits.items():
        if reader_split not in ("", "train"):
            splits[vid] = reader_split
        else:
            splits[vid] = assign_split(vid, val_fraction=val_fraction, seed=seed)
            hashed.append(vid)
    if at_least_one_val and val_fraction > 0 and "val" not in splits.values() and len(hashed) >= 2:
        closest = min(hashed, key=lambda v: (_split_hash(v, seed), v))
        splits[closest] = "val"
    return splits


# ----------------------------------------------------------------------------- writing


class _HashingSink:
    """A write-only file wrapper that counts and hashes what pyarrow writes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        b = memoryview(data).cast("B")
        self.sha.update(b)
        self.size += len(b)
        self._f.write(b)
        return len(b)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:  # the owner closes the real file (and commits it)
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


@dataclass
class _Frame:
    frame_index: int
    image: bytes
    objects: list[dict[str, Any]]
    visible: list[int]


def _video_frames(rec: VideoRecord) -> Iterator[_Frame]:
    """Rows of a video, checking that every mask has the video's size."""
    for fi in rec.annotated_indices:
        try:
            image = rec.image_bytes(fi)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"{rec.source or rec.video_id}: cannot read frame {fi} ({exc})"
            ) from exc
        objs: list[dict[str, Any]] = []
        visible: list[int] = []
        for oid in rec.obj_ids:
            m = rec.objects[oid].masks.get(fi)
            if m is None:
                continue
            rle = m.to_rle()
            size = [int(x) for x in rle["size"]]
            if size != [rec.height, rec.width]:
                raise DataError(
                    f"{rec.source or rec.video_id}: object {oid} frame {fi} has RLE size {size}"
                    f", video is {[rec.height, rec.width]}"
                )
            counts = rle["counts"]
            counts = counts.decode() if isinstance(counts, bytes) else str(counts)
            objs.append({"obj_id": int(oid), "counts": counts})
            if rle_area({"size": size, "counts": counts}) > 0:
                visible.append(int(oid))
        yield _Frame(int(fi), bytes(image), objs, visible)


class _ShardWriter:
    """Writes shard files one after another, rolling over at video boundaries."""

    def __init__(
        self, dst: str, *, shard_bytes: int, row_group_bytes: int, partition_label: str = ""
    ) -> None:
        self.dst = dst
        self.label = partition_label
        self.shard_bytes = shard_bytes
        self.row_group_bytes = row_group_bytes
        self.infos: list[ShardInfo] = []
        self.entries: list[VideoEntry] = []
        self._ctx: Any = None
        self._sink: _HashingSink | None = None
        self._writer: pq.ParquetWriter | None = None
        self._split = ""
        self._rows = 0
        self._rg_rows: list[int] = []
        self._videos = 0
        self._buf: list[tuple[str, _Frame, int, int]] = []
        self._buf_bytes = 0
        self.bytes_in = 0

    def _start(self, split: str) -> None:
        name = shard_name(len(self.infos), partition_label=self.label)
        self._ctx = storage.open_atomic(storage.join(self.dst, name), "wb")
        f = self._ctx.__enter__()
        self._sink = _HashingSink(f)
        self._writer = pq.ParquetWriter(
            pa.PythonFile(self._sink, mode="w"),
            FRAME_SCHEMA,
            compression={
                "video_id": "snappy",
                "frame_index": "snappy",
                "height": "snappy",
                "width": "snappy",
                "image": "none",
                **{leaf: "snappy" for leaf in _OBJ_LEAVES},
            },
            use_dictionary=["video_id", "height", "width"],
            column_encoding={"image": "PLAIN"},
            write_statistics=["video_id", "frame_index"],
            write_page_checksum=True,  # CRC per page, verified on read
            max_rows_per_page=1,  # one frame per page: a failed CRC names a single frame
        )
        self._split = split
        self._rows = 0
        self._rg_rows = []
        self._videos = 0

    def _flush_row_group(self) -> None:
        if not self._buf:
            return
        assert self._writer is not None
        cols: dict[str, list[Any]] = {n: [] for n in FRAME_SCHEMA.names}
        for vid, fr, h, w in self._buf:
            cols["video_id"].append(vid)
            cols["frame_index"].append(fr.frame_index)
            cols["height"].append(h)
            cols["width"].append(w)
            cols["image"].append(fr.image)
            cols["objects"].append(fr.objects)
        table = pa.Table.from_pydict(cols, schema=FRAME_SCHEMA)
        self._writer.write_table(table, row_group_size=len(self._buf))
        self._rg_rows.append(len(self._buf))
        self._rows += len(self._buf)
        self._buf = []
        self._buf_bytes = 0

    def _finish(self) -> None:
        if self._writer is None:
            return
        self._flush_row_group()
        self._writer.close()
        assert self._sink is not None
        self._ctx.__exit__(None, None, None)  # renames the temporary file into place
        name = shard_name(len(self.infos), partition_label=self.label)
        footer = footer_sha256_url(storage.join(self.dst, name), self._sink.size)
        self.infos.append(
            ShardInfo(
                file=name,
                split=self._split,
                rows=self._rows,
                row_groups=len(self._rg_rows),
                videos=self._videos,
                bytes=self._sink.size,
                sha256=self._sink.sha.hexdigest(),
                row_group_rows=list(self._rg_rows),
                footer_sha256=footer,
            )
        )
        self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # best effort on an error path
                self._writer.close()
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._writer = None

    def add_video(self, rec: VideoRecord, split: str) -> VideoEntry:
        started = self._writer is not None
        size_so_far = self._sink.size + self._buf_bytes if self._sink else 0
        if not started or split != self._split or size_so_far >= self.shard_bytes:
            self._finish()
            self._start(split)
        # Row groups stay video-aligned when they are already reasonably large.
        if self._buf_bytes >= self.row_group_bytes // 2:
            self._flush_row_group()
        first_row = self._rows + len(self._buf)
        first_group = len(self._rg_rows)
        digest = hashlib.sha256(f"{rec.video_id}\n{rec.height}x{rec.width}\n".encode())
        frames: list[int] = []
        visible: list[list[int]] = []
        nbytes = 0
        for fr in _video_frames(rec):
            self._buf.append((rec.video_id, fr, rec.height, rec.width))
            self._buf_bytes += len(fr.image) + sum(len(o["counts"]) for o in fr.objects)
            digest.update(f"{fr.frame_index}\n".encode())
            digest.update(fr.image)
            digest.update(json.dumps(fr.objects, sort_keys=True).encode())
            frames.append(fr.frame_index)
            visible.append(fr.visible)
            nbytes += len(fr.image)
            if self._buf_bytes >= self.row_group_bytes:
                self._flush_row_group()
        self.bytes_in += nbytes
        last_group = len(self._rg_rows) if self._buf else len(self._rg_rows) - 1
        self._videos += 1
        entry = VideoEntry(
            video_id=rec.video_id,
            split=split,
            shard=shard_name(len(self.infos), partition_label=self.label),
            row_groups=list(range(first_group, max(first_group, last_group) + 1)),
            first_row=first_row,
            num_frames=len(frames),
            frame_indices=frames,
            obj_ids=[int(o) for o in rec.obj_ids],
            visible=visible,
            height=rec.height,
            width=rec.width,
            image_bytes=nbytes,
            content_hash=digest.hexdigest(),
        )
        self.entries.append(entry)
        return entry

    def close(self) -> None:
        self._finish()


def _load_records(
    src: str | Iterable[VideoRecord],
    *,
    fmt: str,
    annotations: str,
    select: Callable[[str], bool] | None = None,
) -> list[VideoRecord]:
    if isinstance(src, str):
        return list(iter_videos(src, fmt=fmt, annotations=annotations, select=select))
    return [r for r in src if select is None or select(r.video_id)]


def _check_args(shard_size_mb: float, row_group_mb: float, val_fraction: float) -> None:
    if shard_size_mb <= 0 or row_group_mb <= 0:
        raise ValueError("shard_size_mb and row_group_mb must be > 0")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must be within [0, 1]")


def _check_ids(records: Sequence[VideoRecord], src_name: str) -> None:
    seen: dict[str, str] = {}
    for r in records:
        check_video_id(r.video_id, source=r.source or src_name)
        if r.video_id in seen:
            raise DataError(f"{src_name}: duplicate video id {r.video_id!r} ({seen[r.video_id]})")
        seen[r.video_id] = r.source


def split_sort_key(split: str, video_id: str) -> tuple[int, str, str]:
    """Order of videos in shards and in ``index.parquet``: train, val, other splits; by id."""
    return ({"train": 0, "val": 1}.get(split, 2), split, video_id)


def _pack(
    records: list[VideoRecord],
    splits: Mapping[str, str],
    *,
    dst: str,
    shard_size_mb: float,
    row_group_mb: float,
    partition_label: str,
    progress: bool,
) -> _ShardWriter:
    """Write the shard files of ``records`` (sorted in place) under ``dst``."""
    records.sort(key=lambda r: split_sort_key(splits[r.video_id], r.video_id))
    writer = _ShardWriter(
        dst,
        shard_bytes=int(shard_size_mb * 2**20),
        row_group_bytes=int(row_group_mb * 2**20),
        partition_label=partition_label,
    )
    bar = _progress(progress, sum(len(r.annotated_indices) for r in records))
    try:
        for rec in records:
            entry = writer.add_video(rec, splits[rec.video_id])
            if bar is not None:
                bar.update(entry.num_frames)
                bar.set_postfix(MB=f"{writer.bytes_in / 2**20:.0f}")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return writer


def _remove_shard_files(dst: str, *, prefix: str, keep: set[str]) -> None:
    """Delete ``<prefix>*.parquet`` files of ``dst`` that are not in ``keep`` (stale output)."""
    for name in storage.listdir(dst):
        if name.startswith(prefix) and name.endswith(".parquet") and name not in keep:
            storage.remove(storage.join(dst, name), recursive=False)


def write_shards(
    *,
    src: str | Iterable[VideoRecord],
    dst: str,
    shard_size_mb: float = 256,
    row_group_mb: float = 4,
    val_fraction: float = 0.1,
    seed: int = 0,
    fmt: str = "auto",
    annotations: str = "manual",
    progress: bool = False,
) -> ShardManifest:
    """Pack a dataset into Parquet shards under ``dst`` (any fsspec URL), in one pass.

    Args:
        src: a dataset URL read with :func:`sam2_core.data.readers.formats.iter_videos`, or records.
        dst: output directory; an existing shard set there is replaced.
        shard_size_mb: a new shard file starts (at a video boundary) past this size.
        row_group_mb: target row-group size, the unit of random access.
        val_fraction: share of videos (hashed on id and ``seed``) assigned to ``val``; videos
            whose reader already set a split other than ``train`` keep it. When it is > 0 and
            the dataset has at least two such videos, at least one goes to ``val`` (see
            :func:`assign_splits`).
        seed: salt of the split hash.
        fmt, annotations: passed to ``iter_videos``.
        progress: show a tqdm bar (frames, MB/s).

    Returns:
        the manifest (also written to ``dst/manifest.json``, last).

    The output is byte-for-byte deterministic for the same input and arguments. For a dataset
    too large for one machine see :func:`write_shard_partition` and
    :func:`sam2_core.data.prep.shard_commit.commit_shards`.
    """
    _check_args(shard_size_mb, row_group_mb, val_fraction)
    src_name = src if isinstance(src, str) else "<records>"
    records = _load_records(src, fmt=fmt, annotations=annotations)
    if not records:
        raise DataError(f"{src_name}: no videos found, nothing to shard")
    _check_ids(records, src_name)
    splits = assign_splits(records, val_fraction=val_fraction, seed=seed)

    dst = dst.rstrip("/")
    storage.makedirs(dst)
    # A previous manifest would vouch for files we are about to replace: drop it first.
    storage.remove(storage.join(dst, MANIFEST), recursive=False)
    writer = _pack(
        records,
        splits,
        dst=dst,
        shard_size_mb=shard_size_mb,
        row_group_mb=row_group_mb,
        partition_label="",
        progress=progress,
    )
    # Partition manifests of an earlier partitioned write would describe files removed below.
    with contextlib.suppress(FileNotFoundError):
        storage.remove(storage.join(dst, PARTITIONS_DIR), recursive=True)
    params = {
        "shard_size_mb": shard_size_mb,
        "row_group_mb": row_group_mb,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    return write_index_and_manifest(
        dst=dst, videos=writer.entries, shards=writer.infos, params=params
    )


def write_index_and_manifest(
    *, dst: str, videos: Sequence[VideoEntry], shards: Sequence[ShardInfo], params: dict[str, Any]
) -> ShardManifest:
    """Finish a shard directory whose shard files are written: ``index.parquet`` (rows in the
    given order), removal of shard files no entry names, then ``manifest.json`` (last, atomic).
    """
    index_bytes = _index_bytes(list(videos))
    storage.write_bytes_atomic(storage.join(dst, INDEX), index_bytes)
    _remove_shard_files(dst, prefix="shard-", keep={s.file for s in shards})
    counts: dict[str, dict[str, int]] = {}
    for e in videos:
        c = counts.setdefault(e.split, {"videos": 0, "frames": 0})
        c["videos"] += 1
        c["frames"] += e.num_frames
    total = hashlib.sha256()
    for e in videos:
        total.update(f"{e.split}:{e.content_hash}\n".encode())
    manifest = ShardManifest(
        num_videos=len(videos),
        num_frames=sum(e.num_frames for e in videos),
        splits=counts,
        shards=list(shards),
        index_sha256=hashlib.sha256(index_bytes).hexdigest(),
        index_bytes=len(index_bytes),
        content_hash=total.hexdigest(),
        params=params,
    )
    storage.write_json_atomic(storage.join(dst, MANIFEST), manifest.to_json())
    log.info(
        "wrote %d videos, %d frames in %d shards to %s",
        manifest.num_videos,
        manifest.num_frames,
        len(manifest.shards),
        dst,
    )
    return manifest


def write_shard_partition(
    *,
    src: str | Iterable[VideoRecord],
    dst: str,
    partition: int,
    num_partitions: int,
    shard_size_mb: float = 256,
    row_group_mb: float = 4,
    val_fraction: float = 0.1,
    seed: int = 0,
    fmt: str = "auto",
    annotations: str = "manual",
    progress: bool = False,
) -> PartitionManifest:
    """Pack partition ``partition`` of ``num_partitions`` of a dataset into shards under ``dst``.

    Only the videos whose id hashes into the partition
    (:func:`sam2_core.data.prep.partitions.partition_of`) are read and written, into files named
    ``shard-pPPPP-of-NNNN-xxxxx.parquet`` that no other partition writes; the partition's
    manifest ``_partitions/pPPPP-of-NNNN.json`` is written last (its completion marker). A
    dataset-level ``manifest.json`` in ``dst`` is removed first (it would vouch for files being
    replaced); :func:`sam2_core.data.prep.shard_commit.commit_shards` writes the new one once
    every partition is complete. Arguments as for :func:`write_shards`; a partition may be empty.
    Rerunning a partition rewrites only that partition's files (byte-identical for the same
    input).
    """
    check_partition(partition=partition, num_partitions=num_partitions)
    _check_args(shard_size_mb, row_group_mb, val_fraction)
    label = partition_label(partition=partition, num_partitions=num_partitions)
    src_name = src if isinstance(src, str) else "<records>"

    def mine(video_id: str) -> bool:
        return in_partition(video_id, partition=partition, num_partitions=num_partitions)

    records = _load_records(src, fmt=fmt, annotations=annotations, select=mine)
    _check_ids(records, src_name)
    reader_splits = {r.video_id: r.split for r in records}
    # The at-least-one-val rule needs the whole dataset: the commit applies it.
    splits = assign_splits_by_id(
        reader_splits, val_fraction=val_fraction, seed=seed, at_least_one_val=False
    )

    dst = dst.rstrip("/")
    storage.makedirs(dst)
    marker = storage.join(dst, partition_manifest_name(label))
    for url in (storage.join(dst, MANIFEST), marker):
        storage.remove(url, recursive=False)
    writer = _pack(
        records,
        splits,
        dst=dst,
        shard_size_mb=shard_size_mb,
        row_group_mb=row_group_mb,
        partition_label=label,
        progress=progress,
    )
    _remove_shard_files(dst, prefix=f"shard-{label}-", keep={s.file for s in writer.infos})
    manifest = PartitionManifest(
        partition=partition,
        num_partitions=num_partitions,
        params={
            "shard_size_mb": shard_size_mb,
            "row_group_mb": row_group_mb,
            "val_fraction": val_fraction,
            "seed": seed,
        },
        shards=writer.infos,
        videos=writer.entries,
        reader_splits={v: s for v, s in sorted(reader_splits.items()) if s not in ("", "train")},
    )
    storage.write_json_atomic(marker, manifest.to_json())
    log.info(
        "partition %s: %d videos in %d shards under %s",
        label,
        len(manifest.videos),
        len(manifest.shards),
        dst,
    )
    return manifest


def _index_bytes(entries: list[VideoEntry]) -> bytes:
    cols: dict[str, list[Any]] = {n: [] for n in INDEX_SCHEMA.names}
    for e in entries:
        for n in INDEX_SCHEMA.names:
            cols[n].append(getattr(e, n))
    table = pa.Table.from_pydict(cols, schema=INDEX_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    return bytes(sink.getvalue().to_pybytes())


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="shard")
