"""``sam2kf shard --verify``: check everything train and evaluate rely on in a shard directory.

:meth:`ShardIndex.open` checks the manifest (schema, counts), the index and the file sizes; a
reader checks each file's footer once and every page's CRC as it decodes. Verification goes
all the way: full sha256 of every file, every page read (CRCs), every row matched against the
index, every video's content hash recomputed (so a changed byte is found even in files written
without page checksums), every JPEG decoded and every mask RLE decoded at the frame's size.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from sam2_core import storage
from sam2_core.data.readers.integrity import describe, footer_sha256_url
from sam2_core.data.readers.records import DataError
from sam2_core.data.readers.shards import ShardIndex, ShardReader, VideoEntry


def verify_dataset(url: str, *, decode_images: bool = True) -> ShardIndex:
    """Verify a shard directory completely; returns its index, raises DataError on any fault.

    Args:
        url: the shard directory (local path or fsspec URL).
        decode_images: also decode every JPEG (the slowest part; the content hashes already
            prove the bytes are the ones written).

    Every error is one line naming the file and, for frame data, the row group, video and
    frame.
    """
    url = url.rstrip("/")
    index = ShardIndex.open(url)  # manifest schema and counts, index sha256, file sizes
    for s in index.manifest.shards:
        if s.footer_sha256 and footer_sha256_url(storage.join(url, s.file), s.bytes) != (
            s.footer_sha256
        ):
            raise DataError(f"{url}/{s.file}: Parquet footer checksum differs from the manifest")
    _check_index(url, index)
    reader = ShardReader(url, index.manifest, max_open=2)
    total = hashlib.sha256()
    try:
        for e in index.videos:
            _check_video(url, reader, e, decode_images=decode_images)
            total.update(f"{e.split}:{e.content_hash}\n".encode())
    finally:
        reader.close()
    if total.hexdigest() != index.manifest.content_hash:
        raise DataError(f"{url}/manifest.json: content_hash differs from the videos' hashes")
    # Last, the bytes not covered above (page headers, unused space): full sha256 per file.
    # (After the frame checks, so that a changed frame is reported with its video and frame.)
    return ShardIndex.open(url, verify=True)


def _check_index(url: str, index: ShardIndex) -> None:
    """The index agrees with the manifest: shards, splits, row ranges and list lengths."""
    rows_per_shard: dict[str, int] = {}
    for e in index.videos:
        where = f"{url}/index.parquet: video {e.video_id}"
        info = index.shards.get(e.shard)
        if info is None:
            raise DataError(f"{where}: shard {e.shard} is not in the manifest")
        if e.split != info.split:
            raise DataError(f"{where}: split {e.split} but its shard holds split {info.split}")
        if not (e.first_row >= 0 and e.first_row + e.num_frames <= info.rows):
            raise DataError(f"{where}: rows {e.first_row}+{e.num_frames} outside {e.shard}")
        if not (len(e.frame_indices) == len(e.visible) == e.num_frames):
            raise DataError(f"{where}: frame lists disagree with num_frames={e.num_frames}")
        rows_per_shard[e.shard] = rows_per_shard.get(e.shard, 0) + e.num_frames
    for s in index.manifest.shards:
        if rows_per_shard.get(s.file, 0) != s.rows:
            raise DataError(
                f"{url}/{s.file}: {s.rows} rows, but the index places "
                f"{rows_per_shard.get(s.file, 0)} frames in it"
            )


def _check_video(url: str, reader: ShardReader, e: VideoEntry, *, decode_images: bool) -> None:
    rows = list(range(e.first_row, e.first_row + e.num_frames))
    cols = ["video_id", "frame_index", "height", "width", "image", "objects"]
    table = reader.read_rows(e.shard, rows, cols)
    digest = hashlib.sha256(f"{e.video_id}\n{e.height}x{e.width}\n".encode())
    data: dict[str, list[Any]] = {c: table.column(c).to_pylist() for c in cols}
    for i, want_frame in enumerate(e.frame_indices):
        where = f"{url}/{e.shard}: video {e.video_id}, frame {want_frame}"
        got = (data["video_id"][i], data["frame_index"][i], data["height"][i], data["width"][i])
        if got != (e.video_id, want_frame, e.height, e.width):
            raise DataError(f"{where}: row {rows[i]} holds {got}, the index says otherwise")
        image = bytes(data["image"][i])
        objects = data["objects"][i] or []
        digest.update(f"{want_frame}\n".encode())
        digest.update(image)
        digest.update(json.dumps(objects, sort_keys=True).encode())
        for o in objects:
            problem = _rle_problem(o["counts"], e.height * e.width)
            if problem:
                raise DataError(f"{where}: object {o['obj_id']} mask RLE is invalid ({problem})")
        if decode_images:
            _decode_image(image, where)
    if digest.hexdigest() != e.content_hash:
        raise DataError(
            f"{url}/{e.shard}: video {e.video_id}: content differs from its hash in the index"
            " (changed images or masks); write the shards again (sam2kf shard)"
        )


def _decode_image(data: bytes, where: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:
        raise DataError(f"{where}: image does not decode ({describe(exc)})") from exc


def _rle_problem(counts: Any, pixels: int) -> str:
    """Why a COCO compressed RLE string is not a mask of ``pixels`` pixels ("" when it is).

    pycocotools decodes any string without complaint (garbage runs give garbage masks), so
    the runs are summed here: 6-bit characters from ``0`` (48), 5 value bits and a
    continuation bit each, sign-extended, and from the third run on stored as the difference
    to the run two before.
    """
    if not isinstance(counts, str):
        return f"counts is {type(counts).__name__}, not a string"
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(counts):
                return "truncated run"
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return f"character {counts[p]!r} outside the RLE alphabet"
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return f"negative run {value}"
        runs.append(value)
    if sum(runs) != pixels:
        return f"runs cover {sum(runs)} pixels, the frame has {pixels}"
    return ""
