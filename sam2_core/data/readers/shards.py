"""Parquet shards of annotated frames on any fsspec URL (local path, gs://, s3://): the
format, and reading it (written by :mod:`sam2_core.data.prep.shard_writer`).

Layout of a shard directory ``DST``::

    DST/shard-00000.parquet ...   one row per annotated frame, sorted by (video_id, frame_index)
    DST/index.parquet             one row per video: where its rows are, its objects, its split
    DST/manifest.json             written LAST: row counts, sizes, sha256 and footer sha256 of
                                  every file (its schema: :mod:`.manifest_schema`)

A partitioned write (:func:`sam2_core.data.prep.shard_writer.write_shard_partition`, one call per
partition, possibly on different machines) names its files ``shard-pPPPP-of-NNNN-00000.parquet``
and leaves ``DST/_partitions/pPPPP-of-NNNN.json``; the commit
(:func:`sam2_core.data.prep.shard_commit.commit_shards`) then writes ``index.parquet`` and
``manifest.json`` as above. Readers only ever look at ``manifest.json`` and ``index.parquet``.

Frame table columns: ``video_id`` string, ``frame_index`` int32 (original frame number),
``height``/``width`` int32, ``image`` binary (the JPEG bytes exactly as stored: no re-encode,
no compression, PLAIN encoding, no dictionary, no statistics) and ``objects``
``list<struct<obj_id: int32, counts: string>>`` (COCO compressed RLE of each object annotated
on that frame; the size is the frame's).

Row groups are the unit of random access: a training clip reads the row groups that hold its
frames (one ranged read per row group, only the columns it needs). A video never spans two
shard files and a shard never mixes splits, except the one a partitioned commit may mark
``mixed`` (see ``commit_shards``); readers select videos by the index, never by shard file.

Nothing partial is ever accepted: :meth:`ShardIndex.open` refuses a directory without
``manifest.json``, with a manifest that fails its schema, or whose files disagree with it.
Nothing corrupt is read silently: pages carry CRCs that are verified on read, each file's size
and footer checksum are checked once per process before its first use
(:mod:`sam2_core.data.readers.integrity`), and a decode error names the shard file, the row
group, the video and the frame.
"""

from __future__ import annotations

import bisect
import hashlib
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sam2_core import storage
from sam2_core.data.readers.integrity import check_file_once, describe, is_decode_error
from sam2_core.data.readers.manifest_schema import validate_manifest
from sam2_core.data.readers.records import (
    DataError,
    RleMask,
    VideoObject,
    VideoRecord,
)

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


#: partition manifests of a partitioned write (merged by the commit into manifest.json + index)
PARTITIONS_DIR = "_partitions"
PARTITION_FORMAT = "sam2kf-frame-shards-partition"


def shard_name(i: int, *, partition_label: str = "") -> str:
    """``shard-00000.parquet``; a partition's own files carry its label
    (``shard-p0002-of-0003-00000.parquet``), so partitions never write the same name."""
    if partition_label:
        return f"shard-{partition_label}-{i:05d}.parquet"
    return f"shard-{i:05d}.parquet"


def partition_manifest_name(partition_label: str) -> str:
    """Path (relative to the dataset folder) of a partition's manifest, its completion marker."""
    return f"{PARTITIONS_DIR}/{partition_label}.json"


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
    #: sha256 of the Parquet footer (see :mod:`sam2_core.data.readers.integrity`); "" in
    #: manifests written before it existed
    footer_sha256: str = ""


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
        validate_manifest(obj, source=source)
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


@dataclass
class PartitionManifest:
    """``_partitions/pPPPP-of-NNNN.json``: one partition's shards and index rows, written last.

    ``reader_splits`` records the videos whose reader set a split other than ``train`` (the
    commit needs them to apply the at-least-one-``val`` rule exactly as a single pass would).
    """

    partition: int
    num_partitions: int
    params: dict[str, Any]
    shards: list[ShardInfo]
    videos: list[VideoEntry]
    reader_splits: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    format: str = PARTITION_FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, source: str = "") -> PartitionManifest:
        try:
            kw = {k: v for k, v in obj.items() if k not in ("shards", "videos")}
            return cls(
                shards=[ShardInfo(**s) for s in obj["shards"]],
                videos=[VideoEntry(**v) for v in obj["videos"]],
                **kw,
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"{source}: malformed partition manifest ({exc})") from exc


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
        try:
            obj = storage.read_json(murl)
        except ValueError as exc:  # json.JSONDecodeError: a damaged or hand-edited manifest
            raise DataError(
                f"{murl}: not valid JSON ({exc}); the shard directory is damaged: "
                "run `sam2kf shard SRC DST` again"
            ) from None
        manifest = ShardManifest.from_json(obj, source=murl)
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
        info = self.shards[shard]
        where = f"{self.url}/{shard}"
        try:
            check_file_once(
                handle,
                url=where,
                expected_bytes=info.bytes,
                expected_footer_sha256=info.footer_sha256,
            )
            pf = pq.ParquetFile(handle, pre_buffer=True, page_checksum_verification=True)
        except BaseException as exc:
            handle.close()
            if is_decode_error(exc):
                raise DataError(f"{where}: unreadable Parquet file ({describe(exc)})") from exc
            raise
        if pf.metadata.num_rows != info.rows:
            handle.close()
            raise DataError(f"{where}: {pf.metadata.num_rows} rows, manifest {info.rows}")
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
        try:
            table = pf.read_row_groups(groups, columns=list(columns), use_threads=False)
        except Exception as exc:
            if not is_decode_error(exc):
                raise
            raise self._decode_error(shard, pf, starts, groups, rows, columns, exc) from exc
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

    def _decode_error(
        self,
        shard: str,
        pf: pq.ParquetFile,
        starts: list[int],
        groups: list[int],
        rows: Sequence[int],
        columns: Sequence[str],
        exc: BaseException,
    ) -> DataError:
        """The error of a failed read, naming file, row group, column, video and frame.

        Finds the first row group, column and row that fail by reading again in small pieces
        (only on this error path), then looks the row up in the index.
        """
        bad_group, bad_col, bad_row = groups[0], "", min(rows)
        for g in groups:
            found = _first_bad_row(pf, g, columns)
            if found is not None:
                bad_group, bad_col, offset = g, found[0], found[1]
                bad_row = starts[g] + offset
                break
        where = _row_owner(self.url, shard, bad_row)
        col = f", column {bad_col}" if bad_col else ""
        return DataError(
            f"{self.url}/{shard}: row group {bad_group}{col}, {where}: cannot decode "
            f"({describe(exc)}); the shard is corrupt, write the shards again (sam2kf shard)"
        )

    def close(self) -> None:
        for handle, _, _ in self._open.values():
            handle.close()
        self._open.clear()


def _first_bad_row(
    pf: pq.ParquetFile, group: int, columns: Sequence[str]
) -> tuple[str, int] | None:
    """``(column, row offset in the group)`` of the first value that fails to decode."""
    for col in columns:
        offset = 0
        try:
            for batch in pf.iter_batches(
                batch_size=1, row_groups=[group], columns=[col], use_threads=False
            ):
                offset += batch.num_rows
        except Exception as exc:
            if not is_decode_error(exc):
                raise
            return col, offset
    return None


def _row_owner(url: str, shard: str, row: int) -> str:
    """``video V, frame F`` of a shard row, from the index (best effort: on an error path)."""
    try:
        index = ShardIndex.open(url)
    except DataError:
        return f"row {row}"
    for e in index.videos:
        if e.shard == shard and e.first_row <= row < e.first_row + e.num_frames:
            return f"video {e.video_id}, frame {e.frame_indices[row - e.first_row]}"
    return f"row {row}"


def iter_shard_videos(
    url: str, *, split: str | None = None, select: Callable[[str], bool] | None = None
) -> Iterator[VideoRecord]:
    """Yield the videos of a shard directory as :class:`VideoRecord` (images read lazily).

    Masks come back as :class:`RleMask` (decoded only when asked for). Each record reads its
    frames' row groups on first use and keeps the last one it read.
    """
    index = ShardIndex.open(url)
    reader = ShardReader(url, index.manifest, max_open=2)
    for entry in index.select(split):
        if select is None or select(entry.video_id):
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
