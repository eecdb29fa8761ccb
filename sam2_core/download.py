"""Resumable, atomic, verified HTTP(S) downloads into a local folder, a PVC or an object store.

:func:`download` fetches ``url`` to ``dest`` (a local path or an fsspec URL such as ``gs://``)
with the standard library's ``urllib`` (no new dependency):

* **resumable**: bytes arrive in ``<dest>.part`` (object stores: a local staging file); a later
  call continues with an HTTP ``Range`` request (guarded by ``If-Range`` with the server's
  ``ETag``/``Last-Modified``), and a server that ignores ``Range`` restarts the file cleanly;
* **atomic**: the file gets its final name only when complete and verified (local: ``rename``;
  object stores: one upload, which becomes visible only when it completes), and the
  ``<dest>.sha256`` marker (``sha256sum`` format) is written after it;
* **checked**: the size must equal the server's ``Content-Length`` (and ``size`` if given), and a
  pinned ``sha256`` must match; a refused file is deleted, so nothing that looks complete is left;
* **cached**: an existing ``dest`` is reused without any network access (re-hashed when a
  ``sha256`` is pinned); concurrent callers on one machine wait for each other (``flock``).

Every failure raises :class:`DownloadError` with a one-line message naming the URL and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from typing import Any

from sam2_core import __version__, storage

log = logging.getLogger(__name__)

#: Suffix of the marker written next to a complete download: ``<sha256>  <file name>``.
SIDECAR_SUFFIX = ".sha256"
#: Suffix of the file an unfinished local download is written to.
PART_SUFFIX = ".part"

_CHUNK_BYTES = 1 << 20
_HASH_CHUNK_BYTES = 8 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_CONTENT_RANGE_TOTAL = re.compile(r"^bytes \*/(\d+)$")


class DownloadError(OSError):
    """A download failed or its result was refused; the message is one line.

    ``network`` is true when the server could not be reached or the transfer broke off (as
    opposed to a refused result), so callers can add a hint about air-gapped clusters.
    """

    def __init__(self, message: str, *, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


@dataclass(frozen=True)
class Downloaded:
    """A complete, verified file.

    Attributes:
        path: where it is (``dest`` of :func:`download`, a local path or fsspec URL).
        sha256: hex digest of its bytes (recorded in ``<path>.sha256``).
        size: its size in bytes.
        source: the URL it was fetched from, or ``path`` itself for a cache hit.
        from_cache: true when an existing copy was reused without network access.
        fetched_bytes: bytes transferred by this call.
        resumed_from: bytes of an earlier interrupted transfer that were kept (0 = none).
    """

    path: str
    sha256: str
    size: int
    source: str
    from_cache: bool
    fetched_bytes: int = 0
    resumed_from: int = 0


class _Restart(Exception):
    """The partial file cannot be continued (the server changed or refused it): start over."""


class _Interrupted(Exception):
    """A transfer that broke off; the partial file is kept for the next attempt."""

    def __init__(
        self, have: int, total: int | None, reason: str, *, fetched: int = 0, resumed: int = 0
    ) -> None:
        super().__init__(reason)
        self.have = have  # bytes in the part file now
        self.total = total
        self.reason = reason
        self.fetched = fetched  # bytes this attempt transferred
        self.resumed = resumed  # bytes this attempt continued from


# ------------------------------------------------------------------------------------ hashing
def normalise_sha256(value: str) -> str:
    """Lower-case hex digest from ``"<hex>"`` or ``"sha256:<hex>"``; ``ValueError`` otherwise."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _HEX64.match(digest):
        raise ValueError(
            f"sha256 {value!r} is not a SHA-256 digest; give 64 hexadecimal digits "
            "(optionally prefixed 'sha256:'), e.g. the first field of `sha256sum FILE`"
        )
    return digest


def file_sha256(url: str) -> tuple[str, int]:
    """``(hex digest, size in bytes)`` of a local file or fsspec object, read in 8 MiB pieces."""
    fs, path = storage.get_fs(url)
    h = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def sidecar_url(dest: str) -> str:
    """URL of the ``sha256sum``-format marker of ``dest``."""
    return dest + SIDECAR_SUFFIX


def read_sidecar(dest: str) -> str | None:
    """The digest recorded next to ``dest``, or ``None`` when there is no valid marker."""
    url = sidecar_url(dest)
    try:
        if not storage.exists(url):
            return None
        fields = storage.read_text(url).split()
    except (OSError, UnicodeDecodeError):
        return None
    if not fields:
        return None
    digest = fields[0].lower()
    return digest if _HEX64.match(digest) else None


def write_sidecar(dest: str, sha256: str) -> None:
    """Record ``sha256`` next to ``dest`` (readable by ``sha256sum -c``)."""
    name = posixpath.basename(dest.rstrip("/"))
    storage.write_text_atomic(sidecar_url(dest), f"{sha256}  {name}\n")


# ---------------------------------------------------------------------------------- cache hits
def cached(dest: str, *, sha256: str | None = None, record: bool = True) -> Downloaded | None:
    """An existing complete copy at ``dest``, verified without network access; else ``None``.

    Only complete files ever carry the final name, so an existing ``dest`` is complete (it may
    also be a copy someone staged by hand). Its digest comes from the ``.sha256`` marker; the
    bytes are hashed when there is no marker, or when ``sha256`` is pinned (a marker only
    records; a pin is checked against the bytes themselves).

    Args:
        dest: local path or fsspec URL.
        sha256: pinned digest; a copy that does not match is refused with :class:`DownloadError`
            (it is not deleted: it may be someone's staged file, and the pin may be the error).
        record: write the marker when it is missing (off for read-only, pre-staged folders).
    """
    if not storage.exists(dest):
        return None
    pinned = normalise_sha256(sha256) if sha256 else None
    recorded = read_sidecar(dest)
    if recorded is None or pinned is not None:
        digest, size = file_sha256(dest)
    else:
        fs, path = storage.get_fs(dest)
        digest, size = recorded, int(fs.size(path))
    if pinned is not None and digest != pinned:
        raise DownloadError(
            f"{dest}: sha256 {digest} does not match the pinned {pinned}; correct the pin, or "
            f"delete {dest} (and {sidecar_url(dest)}) to download it again"
        )
    if record and recorded != digest:
        try:
            write_sidecar(dest, digest)
        except OSError as exc:  # a read-only volume still serves the file
            log.debug("cannot record %s: %s", sidecar_url(dest), exc)
    return Downloaded(path=dest, sha256=digest, size=size, source=dest, from_cache=True)


# ---------------------------------------------------------------------------------- downloading
def download(
    url: str,
    dest: str,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    retries: int = 2,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> Downloaded:
    """Fetch ``url`` to ``dest`` once; later calls reuse ``dest`` without network access.

    Args:
        url: ``http://`` or ``https://`` URL.
        dest: final location, a local path (a PVC mount included) or fsspec URL (``gs://``,
            ``s3://``, ``minio://``). Its folder is created if needed.
        sha256: optional pinned digest (hex or ``sha256:<hex>``): a mismatch is refused and the
            file deleted.
        size: optional expected size in bytes, checked against ``Content-Length`` before the
            transfer and against the received bytes after it.
        progress: show a tqdm bar on stderr (updated every 5 s when stderr is not a terminal,
            so pod logs stay short).
        retries: further attempts, each resuming where the last stopped, after a transfer
            breaks off; the partial file is kept after the last one for a later call.
        backoff_s: pause before the first retry, doubled for each further one (at most 30 s).
        timeout_s: socket timeout of each connect and read.

    Returns:
        the verified :class:`Downloaded` file.

    Raises:
        DownloadError: unreachable server, HTTP error, transfer that broke off (``run again to
            resume``), wrong size or wrong digest (nothing is kept in the last two cases).
        ValueError: ``sha256`` is not a SHA-256 digest.
    """
    pinned = normalise_sha256(sha256) if sha256 else None
    hit = cached(dest, sha256=pinned)
    if hit is not None:
        return hit
    fs, final_path = storage.get_fs(dest)
    local = storage.is_local(dest)
    if local:
        folder = os.path.dirname(final_path) or "."
        part = final_path + PART_SUFFIX
        lock = final_path + ".lock"
    else:
        # Object stores cannot append: stage locally (resumable within this machine), then
        # upload the whole file in one go.
        folder = os.path.join(tempfile.gettempdir(), "sam2kf-downloads")
        key = hashlib.sha256(dest.encode()).hexdigest()[:16]
        part = os.path.join(folder, f"{key}-{posixpath.basename(final_path)}{PART_SUFFIX}")
        lock = part + ".lock"
    try:
        os.makedirs(folder, exist_ok=True)
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DownloadError(
            f"cannot write into {folder} to download {dest} ({exc.strerror or exc}); "
            "give a writable cache folder"
        ) from None
    with _locked(lock_fd, what=dest):
        # Another process may have finished the same file while this one waited for the lock.
        hit = cached(dest, sha256=pinned)
        if hit is not None:
            return hit
        digest, total, fetched, resumed = _fetch(
            url,
            part,
            size=size,
            progress=progress,
            retries=retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            label=posixpath.basename(final_path),
        )
        if pinned is not None and digest != pinned:
            _discard(part)
            raise DownloadError(
                f"{url}: sha256 {digest} does not match the pinned {pinned}; the file was "
                "deleted. Check the pin, or the URL/mirror serving a different file"
            )
        if local:
            os.replace(part, final_path)
        else:
            fs.put_file(part, final_path)
            os.remove(part)
        _remove_quietly(part + ".json")
        write_sidecar(dest, digest)
    log.info("downloaded %s -> %s (%d bytes, sha256 %s)", url, dest, total, digest)
    return Downloaded(
        path=dest,
        sha256=digest,
        size=total,
        source=url,
        from_cache=False,
        fetched_bytes=fetched,
        resumed_from=resumed,
    )


@contextlib.contextmanager
def _locked(fd: int, *, what: str) -> Iterator[None]:
    """Exclusive ``flock`` on the open lock file ``fd``; closing it releases the lock."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process downloading %s", what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fetch(
    url: str,
    part: str,
    *,
    size: int | None,
    progress: bool,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    label: str,
) -> tuple[str, int, int, int]:
    """Complete ``part`` from ``url``; returns ``(sha256, size, fetched bytes, resumed from)``."""
    fetched_sum = 0
    resumed_from: int | None = None  # of the first attempt: what earlier calls left behind
    last: _Interrupted | None = None
    attempts = max(0, retries) + 1
    for attempt in range(attempts):
        if attempt and backoff_s > 0:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), 30.0))
        try:
            digest, total, fetched, resumed = _fetch_once(
                url, part, size=size, progress=progress, timeout_s=timeout_s, label=label
            )
        except _Interrupted as exc:
            last = exc
            fetched_sum += exc.fetched
            resumed_from = exc.resumed if resumed_from is None else resumed_from
            log.info("download of %s interrupted at %d bytes (%s)", url, exc.have, exc.reason)
            continue
        fetched_sum += fetched
        resumed_from = resumed if resumed_from is None else resumed_from
        return digest, total, fetched_sum, resumed_from
    assert last is not None
    tries = f"after {attempts} attempt(s)"
    if not last.have and last.total is None:
        raise DownloadError(f"download of {url} failed ({last.reason}) {tries}", network=True)
    of = f" of {last.total}" if last.total is not None else ""
    keep = f"; run again to resume from the {last.have} bytes kept in {part}" if last.have else ""
    raise DownloadError(
        f"download of {url} stopped at {last.have}{of} bytes ({last.reason}) {tries}{keep}",
        network=True,
    )


def _fetch_once(
    url: str,
    part: str,
    *,
    size: int | None,
    progress: bool,
    timeout_s: float,
    label: str,
    restarted: bool = False,
) -> tuple[str, int, int, int]:
    """One HTTP request; a partial file that cannot be continued is dropped and refetched."""
    try:
        return _request(url, part, size=size, progress=progress, timeout_s=timeout_s, label=label)
    except _Restart as exc:
        _discard(part)
        if restarted:
            raise _Interrupted(0, None, str(exc)) from None
        log.info("download of %s: %s; starting over", url, exc)
        return _fetch_once(
            url,
            part,
            size=size,
            progress=progress,
            timeout_s=timeout_s,
            label=label,
            restarted=True,
        )


def _request(
    url: str, part: str, *, size: int | None, progress: bool, timeout_s: float, label: str
) -> tuple[str, int, int, int]:
    have = _part_size(part)
    meta = _read_meta(part) if have else None
    if have and (meta is None or meta.get("url") != url):
        # A partial file from another URL (or without its record) cannot be trusted.
        _discard(part)
        have, meta = 0, None
    headers = {"User-Agent": f"sam2kf/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if meta and meta.get("validator"):
            headers["If-Range"] = str(meta["validator"])
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            # The part may already hold every byte (a crash between download and rename).
            match = _CONTENT_RANGE_TOTAL.match(exc.headers.get("Content-Range", "") or "")
            whole = match is not None and int(match.group(1)) == have
            if whole and (meta is None or meta.get("total") in (None, have)):
                return _finish_existing(part, size=size, url=url)
            raise _Restart("the server refused to resume") from None
        if exc.code >= 500:
            raise _Interrupted(have, None, f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Interrupted(have, None, f"cannot connect: {reason}") from None
    with response:
        return _receive(
            response, url, part, have=have, meta=meta, size=size, progress=progress, label=label
        )


def _receive(
    response: HTTPResponse,
    url: str,
    part: str,
    *,
    have: int,
    meta: dict[str, Any] | None,
    size: int | None,
    progress: bool,
    label: str,
) -> tuple[str, int, int, int]:
    """Stream the body of ``response`` into ``part`` (appending after a ``206``)."""
    length_header = response.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
        if not match or int(match.group(1)) != have:
            raise _Restart("the server answered a different range")
        total = int(match.group(3)) if match.group(3) != "*" else None
        if total is None and length is not None:
            total = have + length
        if meta and meta.get("total") is not None and total != meta["total"]:
            raise _Restart("the file changed on the server")
        mode, resumed = "ab", have
    elif response.status == 200:
        # Fresh transfer, or a server that ignores Range (or whose file changed: If-Range).
        have, total, mode, resumed = 0, length, "wb", 0
    else:
        raise DownloadError(f"download of {url} failed: unexpected HTTP {response.status}")
    if size is not None and total is not None and total != size:
        _discard(part)
        raise DownloadError(
            f"download of {url} refused: the server announces {total} bytes, expected {size}; "
            "check the URL or the expected size"
        )
    validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    storage.write_json_atomic(part + ".json", {"url": url, "total": total, "validator": validator})
    hasher = hashlib.sha256()
    if mode == "ab":
        with open(part, "rb") as f:
            while chunk := f.read(_HASH_CHUNK_BYTES):
                hasher.update(chunk)
    fetched = 0
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=have,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
    )
    with bar, open(part, mode) as out:
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except (OSError, HTTPException) as exc:
                out.flush()
                raise _Interrupted(
                    have + fetched,
                    total,
                    f"{type(exc).__name__}: {exc}",
                    fetched=fetched,
                    resumed=resumed,
                ) from None
            if not chunk:
                break
            out.write(chunk)
            hasher.update(chunk)
            fetched += len(chunk)
            bar.update(len(chunk))
    done = have + fetched
    if total is not None and done < total:
        raise _Interrupted(
            done, total, "the connection closed early", fetched=fetched, resumed=resumed
        )
    if (total is not None and done != total) or (size is not None and done != size):
        _discard(part)
        expected = size if size is not None else total
        raise DownloadError(
            f"download of {url} refused: received {done} bytes, expected {expected}; the file "
            "was deleted"
        )
    return hasher.hexdigest(), done, fetched, resumed


def _finish_existing(part: str, *, size: int | None, url: str) -> tuple[str, int, int, int]:
    """A part file the server confirms is whole (416 with its total): hash it as it is."""
    digest, total = file_sha256(part)
    if size is not None and total != size:
        _discard(part)
        raise DownloadError(
            f"download of {url} refused: received {total} bytes, expected {size}; the file was "
            "deleted"
        )
    return digest, total, 0, total


def _part_size(part: str) -> int:
    try:
        return os.path.getsize(part)
    except OSError:
        return 0


def _read_meta(part: str) -> dict[str, Any] | None:
    try:
        with open(part + ".json", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _discard(part: str) -> None:
    _remove_quietly(part)
    _remove_quietly(part + ".json")


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
