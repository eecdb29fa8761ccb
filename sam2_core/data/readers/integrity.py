"""Cheap integrity checks of Parquet shard files on read, once per process.

A full sha256 of every shard on every start would read the whole dataset; instead the writer
records, per file, its size and the sha256 of its footer (the Thrift file metadata plus the
trailing length and ``PAR1``: row-group offsets, column chunk sizes, schema). The reader checks
both the first time a process opens the file (one small ranged read), and every data page is
protected by its CRC (``write_page_checksum`` / ``page_checksum_verification``), checked by
pyarrow as the page is decoded. A flipped byte anywhere then fails loudly: in the footer at
open, in a page when it is read (naming the file, row group, video and frame; see
:class:`~sam2_core.data.readers.shards.ShardReader`). ``sam2kf shard --verify`` additionally
re-hashes everything (:func:`sam2_core.data.readers.shard_verify.verify_dataset`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import IO

from sam2_core import storage
from sam2_core.data.readers.records import DataError

PARQUET_MAGIC = b"PAR1"
_TAIL = 8  # 4-byte little-endian footer length, then the magic

_lock = threading.Lock()
_checked: set[tuple[int, str, int, str]] = set()  # (pid, url, size, footer sha) seen good


def footer_sha256(handle: IO[bytes], size: int, *, source: str) -> str:
    """sha256 of a Parquet file's footer (metadata + length + magic), read from ``handle``.

    Raises DataError naming ``source`` when the file does not end like a Parquet file.
    """
    if size < len(PARQUET_MAGIC) + _TAIL:
        raise DataError(f"{source}: {size} bytes, too short for a Parquet file")
    handle.seek(size - _TAIL)
    tail = handle.read(_TAIL)
    if len(tail) != _TAIL or tail[4:] != PARQUET_MAGIC:
        raise DataError(f"{source}: does not end with the Parquet magic (corrupt or truncated)")
    n = int.from_bytes(tail[:4], "little")
    if n + _TAIL + len(PARQUET_MAGIC) > size:
        raise DataError(f"{source}: footer length {n} exceeds the file ({size} bytes)")
    handle.seek(size - _TAIL - n)
    meta = handle.read(n)
    if len(meta) != n:
        raise DataError(f"{source}: short read of the footer")
    return hashlib.sha256(meta + tail).hexdigest()


def footer_sha256_url(url: str, size: int) -> str:
    """:func:`footer_sha256` of a file at any fsspec URL (what the shard writer records)."""
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as f:
        return footer_sha256(f, size, source=url)


def check_file_once(
    handle: IO[bytes], *, url: str, expected_bytes: int, expected_footer_sha256: str
) -> None:
    """Check an open shard file against its manifest entry, once per process and file.

    Args:
        handle: the file, opened for reading (seekable); its position is not preserved.
        url: its URL (also the cache key and the name in messages).
        expected_bytes: the size the manifest records.
        expected_footer_sha256: the footer checksum the manifest records ("" for manifests
            written before it existed: then only the size is checked).

    Raises DataError naming the file and what differs.
    """
    key = (os.getpid(), url, expected_bytes, expected_footer_sha256)
    with _lock:
        if key in _checked:
            return
    size = handle.seek(0, os.SEEK_END)
    if size != expected_bytes:
        raise DataError(
            f"{url}: size {size} but the manifest records {expected_bytes} (truncated or"
            " rewritten shard); write the shards again (sam2kf shard)"
        )
    if expected_footer_sha256:
        got = footer_sha256(handle, size, source=url)
        if got != expected_footer_sha256:
            raise DataError(
                f"{url}: Parquet footer checksum differs from the manifest (corrupt shard);"
                " write the shards again (sam2kf shard)"
            )
    handle.seek(0)
    with _lock:
        _checked.add(key)


def forget_checked() -> None:
    """Forget which files were checked (tests that rewrite files in place)."""
    with _lock:
        _checked.clear()


def describe(exc: BaseException) -> str:
    """A decode error as one short line (pyarrow messages can span lines)."""
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") or type(exc).__name__


def is_decode_error(exc: BaseException) -> bool:
    """Errors that reading a corrupt Parquet file raises (CRC, Thrift, codec, Arrow)."""
    import pyarrow as pa

    return isinstance(exc, (pa.ArrowException, OSError, ValueError, EOFError)) and not isinstance(
        exc, DataError
    )
