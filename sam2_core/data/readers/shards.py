"""Parquet shards of annotated frames on any fsspec URL (local path, gs://, s3://).

Layout of a shard directory ``DST``::

    DST/shard-00000.parquet ...   one row per annotated frame, sorted by (video_id, frame_index)
    DST/index.parquet             one row per video: where its rows are, its objects, its split
    DST/manifest.json             written LAST: row counts, sizes and sha256 of every file

Frame table columns: ``video_id`` string, ``frame_index`` int32 (original frame number),
``height``/``width`` int32, ``image`` binary (the JPEG bytes exactly as stored: no re-encode,
no compression, PLAIN encoding, no dictionary, no statistics) and ``objects``
``list<struct<obj_id: int32, counts: string>>`` (COCO compressed RLE of each object annotated
on that frame; the size is the frame's).

Row groups are the unit of random access: a training clip reads the row groups that hold its
frames (one ranged read per row group, only the columns it needs). They are closed at a video
boundary once they reach half of ``row_group_mb`` and inside a video when they reach it, so a
clip of 8 frames touches one or two of them. A video never spans two shard files and a shard
never mixes splits. Videos go to ``val`` when a hash of (seed, video id) falls below
``val_fraction`` (a reader may also have set the split itself); with ``val_fraction > 0`` and
two or more videos, at least one video is in ``val``.

Nothing partial is ever accepted: every file is written under a temporary name (local) or as
one upload (object stores), ``manifest.json`` is removed first and written last, and
:meth:`ShardIndex.open` refuses a directory without it or whose files disagree with it.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from sam2_core import storage
from sam2_core.data.readers.records import (
    DataError,
    RleMask,
    VideoObject,
    VideoRecord,
    check_video_id,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT_NAME = "sam2kf-frame-shards"
MANIFEST = "manifest.json"
INDEX = "index.parquet"

OBJECT_TYPE = pa.struct([("obj_id", pa.int32()), ("counts", pa.string())])
FRAME_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("frame_index", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("image", pa.binary()),
        ("objects", pa.list_(OBJECT_TYPE)),
    ]
)
INDEX_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("row_groups", pa.list_(pa.int32())),
        ("first_row", pa.int64()),
        ("num_frames", pa.int32()),
        ("frame_indices", pa.list_(pa.int32())),
        ("obj_ids", pa.list_(pa.int32())),
        ("visible", pa.list_(pa.list_(pa.int32()))),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("image_bytes", pa.int64()),
        ("content_hash", pa.string()),
    ]
)
_OBJ_LEAVES = ("objects.list.element.obj_id", "objects.list.element.counts")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


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
    :func:`assign_split`.

    Small datasets could hash every video to ``train``; so when ``val_fraction > 0`` and no
    video ends up in ``val``, the hashed video with the smallest hash (the one closest to the
    threshold) goes to ``val``, provided at least one other video stays in ``train``. The result
    depends only on the set of video ids and ``seed`` (deterministic, order independent).
    """
    splits: dict[str, str] = {}
    hashed: list[str] = []
    for r in records:
        if r.split not in ("", "train"):
            splits[r.video_id] = r.split
        else:
            splits[r.video_id] = assign_split(r.video_id, val_fraction=val_fraction, seed=seed)
            hashed.append(r.video_id)
    if val_fraction > 0 and "val" not in splits.values() and len(hashed) >= 2:
        closest = min(hashed, key=lambda v: (_split_hash(v, seed), v))
        splits[closest] = "val"
    return splits


# ----------------------------------------------------------------------------- manifest/index


@dataclass
class ShardInfo:
    """One shard file as recorded in the manifest."""

    file: str
    split: str
    rows: int
    row_groups: int
    videos: int
    bytes: int
    sha256: str
    row_group_rows: list[int] = field(default_factory=list)


@dataclass
class ShardManifest:
    """``manifest.json``: the completion marker and checksum list of a shard directory."""

    num_videos: int
    num_frames: int
    splits: dict[str, dict[str, int]]
    shards: list[ShardInfo]
    index_sha256: str
    index_bytes: int
    content_hash: str
    params: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, source: str = "") -> ShardManifest:
        try:
            shards = [ShardInfo(**s) for s in obj["shards"]]
            kw = {k: v for k, v in obj.items() if k != "shards"}
            return cls(shards=shards, **kw)
        except (KeyError, TypeError) as exc:
            raise DataError(f"{source}: malformed {MANIFEST} ({exc})") from exc


@dataclass
class VideoEntry:
    """One row of ``index.parquet``: where a video's frames are and what they contain.

    ``visible[i]`` lists the objects with a non-empty mask on annotated frame ``i`` (what the
    sampler needs, without reading any mask).
    """

    video_id: str
    split: str
    shard: str
    row_groups: list[int]
    first_row: int
    num_frames: int
    frame_indices: list[int]
    obj_ids: list[int]
    visible: list[list[int]]
    height: int
    width: int
    image_bytes: int
    content_hash: str


class ShardIndex:
    """A validated shard directory: manifest plus per-video index (plain data, fork-safe)."""

    def __init__(self, url: str, manifest: ShardManifest, videos: list[VideoEntry]) -> None:
        self.url = url
        self.manifest = manifest
        self.videos = videos
        self.shards = {s.file: s for s in manifest.shards}

    @classmethod
    def open(cls, url: str, *, verify: bool = False) -> ShardIndex:
        """Read and check a shard directory.

        Raises DataError when ``manifest.json`` is missing (an unfinished or failed write), or
        when the index or a shard file is missing or differs in size (or, with ``verify``, in
        sha256) from what the manifest recorded.
        """
        url = url.rstrip("/")
        murl = storage.join(url, MANIFEST)
        if not storage.exists(murl):
            raise DataError(
                f"{url}: no {MANIFEST}; not a complete shard directory (sharding unfinished "
                "or failed). Run `sam2kf shard SRC DST` again."
            )
        manifest = ShardManifest.from_json(storage.read_json(murl), source=murl)
        if manifest.schema_version != SCHEMA_VERSION or manifest.format != FORMAT_NAME:
            raise DataError(
                f"{murl}: format {manifest.format!r} v{manifest.schema_version}, this version "
                f"reads {FORMAT_NAME!r} v{SCHEMA_VERSION}"
            )
        sizes = _sizes(url)
        index_bytes = storage.read_bytes(storage.join(url, INDEX)) if INDEX in sizes else None
        if index_bytes is None or hashlib.sha256(index_bytes).hexdigest() != manifest.index_sha256:
            raise DataError(f"{url}/{INDEX}: missing or does not match {MANIFEST}")
        for s in manifest.shards:
            if sizes.get(s.file) != s.bytes:
                raise DataError(
                    f"{url}/{s.file}: size {sizes.get(s.file)} but {MANIFEST} records {s.bytes}"
                    " (missing, truncated or rewritten shard)"
                )
            if verify:
                digest = _sha256_url(storage.join(url, s.file))
                if digest != s.sha256:
                    raise DataError(f"{url}/{s.file}: sha256 differs from {MANIFEST}")
        videos = _read_index(index_bytes, source=f"{url}/{INDEX}")
        if len(videos) != manifest.num_videos or sum(v.num_frames for v in videos) != (
            manifest.num_frames
        ):
            raise DataError(f"{url}/{INDEX}: video or frame count differs from {MANIFEST}")
        return cls(url, manifest, videos)

    def select(self, split: str | None) -> list[VideoEntry]:
        """Videos of a split (all when None)."""
        return [v for v in self.videos if split is None or v.split == split]


def _sizes(url: str) -> dict[str, int]:
    fs, path = storage.get_fs(url)
    out: dict[str, int] = {}
    try:
        for e in fs.ls(path, detail=True):
            out[posixpath.basename(str(e["name"]).rstrip("/"))] = int(e.get("size") or 0)
    except FileNotFoundError:
        pass
    return out


def _sha256_url(url: str) -> str:
    fs, path = storage.get_fs(url)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read_index(data: bytes, *, source: str) -> list[VideoEntry]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise DataError(f"{source}: unreadable index ({exc})") from exc
    return [VideoEntry(**row) for row in table.to_pylist()]


# ----------------------------------------------------------------------------- reading


class ShardReader:
    """Reads frames of a shard directory by row, touching only the row groups needed.

    Files are opened lazily in the process that reads (never pass one across a fork; a new
    process should build its own reader). Remote files are opened without a read-ahead cache,
    so each row group is one ranged GET of just the requested columns.
    """

    def __init__(self, url: str, manifest: ShardManifest, *, max_open: int = 8) -> None:
        self.url = url.rstrip("/")
        self.shards = {s.file: s for s in manifest.shards}
        self.max_open = max_open
        self._open: dict[str, tuple[Any, pq.ParquetFile, list[int]]] = {}
        self.bytes_read = 0
        self.row_groups_read = 0

    def _file(self, shard: str) -> tuple[pq.ParquetFile, list[int]]:
        if shard in self._open:
            cached = self._open.pop(shard)
            self._open[shard] = cached  # most recently used last
            return cached[1], cached[2]
        if len(self._open) >= self.max_open:
            old = next(iter(self._open))
            self._open.pop(old)[0].close()
        fs, path = storage.get_fs(storage.join(self.url, shard))
        if storage.is_local(self.url):
            handle: Any = open(path, "rb")  # noqa: SIM115 - kept open in the LRU
        else:
            handle = fs.open(path, "rb", cache_type="none")
        pf = pq.ParquetFile(handle, pre_buffer=True)
        info = self.shards[shard]
        if pf.metadata.num_rows != info.rows:
            raise DataError(
                f"{self.url}/{shard}: {pf.metadata.num_rows} rows, manifest {info.rows}"
            )
        starts = [0]
        for i in range(pf.metadata.num_row_groups):
            starts.append(starts[-1] + pf.metadata.row_group(i).num_rows)
        self.bytes_read += int(pf.metadata.serialized_size)
        self._open[shard] = (handle, pf, starts)
        return pf, starts

    def read_rows(self, shard: str, rows: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """Rows (file row numbers, any order) of ``columns``, returned in the order asked."""
        pf, starts = self._file(shard)
        groups = sorted({bisect.bisect_right(starts, r) - 1 for r in rows})
        table = pf.read_row_groups(groups, columns=list(columns), use_threads=False)
        md = pf.metadata
        names = set(columns)
        for g in groups:
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                if col.path_in_schema.split(".")[0] in names:
                    self.bytes_read += int(col.total_compressed_size)
        self.row_groups_read += len(groups)
        # Row r of the file is at (r - start of its group) + rows of the earlier groups read.
        base: dict[int, int] = {}
        acc = 0
        for g in groups:
            base[g] = acc
            acc += starts[g + 1] - starts[g]
        take = [
            base[bisect.bisect_right(starts, r) - 1]
            + r
            - starts[bisect.bisect_right(starts, r) - 1]
            for r in rows
        ]
        return table.take(pa.array(take, type=pa.int64()))

    def close(self) -> None:
        for handle, _, _ in self._open.values():
            handle.close()
        self._open.clear()


def iter_shard_videos(url: str, *, split: str | None = None) -> Iterator[VideoRecord]:
    """Yield the videos of a shard directory as :class:`VideoRecord` (images read lazily).

    Masks come back as :class:`RleMask` (decoded only when asked for). Each record reads its
    frames' row groups on first use and keeps the last one it read.
    """
    index = ShardIndex.open(url)
    reader = ShardReader(url, index.manifest, max_open=2)
    for entry in index.select(split):
        yield _record(entry, reader, url)


def _record(entry: VideoEntry, reader: ShardReader, url: str) -> VideoRecord:
    rows = list(range(entry.first_row, entry.first_row + entry.num_frames))
    table = reader.read_rows(entry.shard, rows, ["frame_index", "objects"])
    objects = {o: VideoObject(obj_id=o) for o in entry.obj_ids}
    h, w = entry.height, entry.width
    for fi, objs in zip(
        table.column("frame_index").to_pylist(), table.column("objects").to_pylist()
    ):
        for o in objs or []:
            obj = objects.setdefault(int(o["obj_id"]), VideoObject(obj_id=int(o["obj_id"])))
            obj.masks[int(fi)] = RleMask({"size": [h, w], "counts": o["counts"]})
    pos = {fi: i for i, fi in enumerate(entry.frame_indices)}

    def load(frame_index: int) -> bytes:
        if frame_index not in pos:
            raise DataError(f"{url}: video {entry.video_id} has no frame {frame_index}")
        t = reader.read_rows(entry.shard, [entry.first_row + pos[frame_index]], ["image"])
        return bytes(t.column("image")[0].as_py())

    return VideoRecord(
        video_id=entry.video_id,
        height=h,
        width=w,
        frame_indices=list(entry.frame_indices),
        annotated_indices=list(entry.frame_indices),
        objects=objects,
        load_image_bytes=load,
        source=f"{url}/{entry.shard}",
        split=entry.split,
    )


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
    from sam2_core.data.readers.rle import rle_area

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

    def __init__(self, dst: str, *, shard_bytes: int, row_group_bytes: int) -> None:
        self.dst = dst
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
        name = shard_name(len(self.infos))
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
        self.infos.append(
            ShardInfo(
                file=shard_name(len(self.infos)),
                split=self._split,
                rows=self._rows,
                row_groups=len(self._rg_rows),
                videos=self._videos,
                bytes=self._sink.size,
                sha256=self._sink.sha.hexdigest(),
                row_group_rows=list(self._rg_rows),
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
            shard=shard_name(len(self.infos)),
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
    src: str | Iterable[VideoRecord], *, fmt: str, annotations: str
) -> list[VideoRecord]:
    if isinstance(src, str):
        from sam2_core.data.readers.formats import iter_videos

        return list(iter_videos(src, fmt=fmt, annotations=annotations))
    return list(src)


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
    """Pack a dataset into Parquet shards under ``dst`` (any fsspec URL).

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

    The output is byte-for-byte deterministic for the same input and arguments.
    """
    if shard_size_mb <= 0 or row_group_mb <= 0:
        raise ValueError("shard_size_mb and row_group_mb must be > 0")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must be within [0, 1]")
    src_name = src if isinstance(src, str) else "<records>"
    records = _load_records(src, fmt=fmt, annotations=annotations)
    if not records:
        raise DataError(f"{src_name}: no videos found, nothing to shard")
    seen: dict[str, str] = {}
    for r in records:
        check_video_id(r.video_id, source=r.source or src_name)
        if r.video_id in seen:
            raise DataError(f"{src_name}: duplicate video id {r.video_id!r} ({seen[r.video_id]})")
        seen[r.video_id] = r.source
    splits = assign_splits(records, val_fraction=val_fraction, seed=seed)
    split_order = {"train": 0, "val": 1}
    records.sort(
        key=lambda r: (split_order.get(splits[r.video_id], 2), splits[r.video_id], r.video_id)
    )

    dst = dst.rstrip("/")
    storage.makedirs(dst)
    # A previous manifest would vouch for files we are about to replace: drop it first.
    storage.remove(storage.join(dst, MANIFEST), recursive=False)
    writer = _ShardWriter(
        dst, shard_bytes=int(shard_size_mb * 2**20), row_group_bytes=int(row_group_mb * 2**20)
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
    index_bytes = _index_bytes(writer.entries)
    storage.write_bytes_atomic(storage.join(dst, INDEX), index_bytes)
    keep = {s.file for s in writer.infos}
    for name in storage.listdir(dst):
        if name.startswith("shard-") and name.endswith(".parquet") and name not in keep:
            storage.remove(storage.join(dst, name), recursive=False)
    counts: dict[str, dict[str, int]] = {}
    for e in writer.entries:
        c = counts.setdefault(e.split, {"videos": 0, "frames": 0})
        c["videos"] += 1
        c["frames"] += e.num_frames
    total = hashlib.sha256()
    for e in writer.entries:
        total.update(f"{e.split}:{e.content_hash}\n".encode())
    manifest = ShardManifest(
        num_videos=len(writer.entries),
        num_frames=sum(e.num_frames for e in writer.entries),
        splits=counts,
        shards=writer.infos,
        index_sha256=hashlib.sha256(index_bytes).hexdigest(),
        index_bytes=len(index_bytes),
        content_hash=total.hexdigest(),
        params={
            "shard_size_mb": shard_size_mb,
            "row_group_mb": row_group_mb,
            "val_fraction": val_fraction,
            "seed": seed,
        },
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


def _index_bytes(entries: list[VideoEntry]) -> bytes:
    cols: dict[str, list[Any]] = {n: [] for n in INDEX_SCHEMA.names}
    for e in entries:
        for n in INDEX_SCHEMA.names:
            cols[n].append(getattr(e, n))
    table = pa.Table.from_pydict(cols, schema=INDEX_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="shard")
