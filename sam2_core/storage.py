"""fsspec helpers shared by every step: one code path for local paths, gs://, s3:// and minio://.

Writers never leave a half-written object that looks complete: files are written to a temporary
name and renamed (local), or written whole in one PUT (object stores, where an upload becomes
visible only when it completes), and directories are committed with a marker file written last.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import random
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

#: Marker written last into a directory whose contents are complete.
COMPLETE_MARKER = "_COMPLETE"


def _prepare_env(url: str) -> None:
    if url.startswith("gs://") and os.environ.get("STORAGE_EMULATOR_HOST"):
        # gcsfs 2026.x probes bucket types over gRPC first; an HTTP emulator cannot answer that
        # and every call would stall. Only relevant when an emulator is configured.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _normalise(url: str) -> tuple[str, dict[str, Any]]:
    """Map KFP's ``minio://`` artifact URIs onto s3fs with the cluster's MinIO endpoint."""
    opts: dict[str, Any] = {}
    if url.startswith("minio://"):
        url = "s3://" + url[len("minio://") :]
        endpoint = os.environ.get("MINIO_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        endpoint = endpoint or "http://minio-service.kubeflow:9000"
        if not endpoint.startswith("http"):
            endpoint = "http://" + endpoint
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    elif url.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL"):
        opts["client_kwargs"] = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    return url, opts


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path.

    A new filesystem object is resolved on each call (fsspec caches per process id), so forked
    DataLoader workers never reuse a parent's gcsfs event loop.
    """
    _prepare_env(url)
    url, opts = _normalise(url)
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


def is_local(url: str) -> bool:
    fs, _ = get_fs(url)
    return isinstance(fs, LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """Join URL/path components with ``/`` (works for local paths and object-store URLs)."""
    out = base.rstrip("/")
    for p in parts:
        out = posixpath.join(out, p.strip("/")) if out else p
    return out


def exists(url: str) -> bool:
    fs, path = get_fs(url)
    return bool(fs.exists(path))


def makedirs(url: str) -> None:
    fs, path = get_fs(url)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(path, exist_ok=True)


def read_bytes(url: str) -> bytes:
    fs, path = get_fs(url)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole object."""
    with open_atomic(url, "wb") as f:
        f.write(data)


def write_text_atomic(url: str, text: str) -> None:
    write_bytes_atomic(url, text.encode("utf-8"))


def write_json_atomic(url: str, obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(url, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def open_atomic(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Stream-write a file that appears under its final name only after a clean close."""
    fs, path = get_fs(url)
    if isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        with fs.open(path, mode) as f:
            yield f


def mark_complete(dir_url: str, info: dict[str, Any] | None = None) -> None:
    """Write the completion marker of a directory (call after every other file is written)."""
    write_json_atomic(join(dir_url, COMPLETE_MARKER), info or {})


def is_complete(dir_url: str) -> bool:
    return exists(join(dir_url, COMPLETE_MARKER))


def listdir(url: str) -> list[str]:
    """Names (not paths) of the direct children of a directory; empty if it does not exist."""
    fs, path = get_fs(url)
    if not fs.exists(path):
        return []
    names = []
    for entry in fs.ls(path, detail=False):
        name = posixpath.basename(str(entry).rstrip("/"))
        if name:
            names.append(name)
    return sorted(names)


def remove(url: str, *, recursive: bool = True) -> None:
    fs, path = get_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def upload_dir(
    local_dir: str, url: str, *, last: Sequence[str] = (), skip: Collection[str] = ()
) -> list[str]:
    """Copy every file under ``local_dir`` to ``url`` (same relative paths); returns the URLs.

    ``last`` names completion files (relative paths, e.g. ``summary.json``): their old copies
    at ``url`` are removed before anything is uploaded and the new ones are uploaded after all
    other files, so a reader that waits for them never sees them next to older or missing files.
    ``skip``: relative paths already at ``url`` (uploaded earlier), not copied again.
    """
    rels = []
    for root, _dirs, files in os.walk(local_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
            if rel not in skip:
                rels.append(rel)
    final = [r for r in last if r in rels]
    for rel in final:
        remove(join(url, rel), recursive=False)
    written = []
    for rel in sorted(r for r in rels if r not in final) + final:
        with open(os.path.join(local_dir, rel), "rb") as f:
            write_bytes_atomic(join(url, rel), f.read())
        written.append(join(url, rel))
    return written


def download_dir(url: str, local_dir: str) -> None:
    """Copy every object under ``url`` into ``local_dir`` (same relative paths)."""
    fs, path = get_fs(url)
    base = path.rstrip("/")
    for obj in fs.find(base):
        rel = str(obj)[len(base) :].lstrip("/")
        if not rel:
            continue
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with fs.open(obj, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read())


@contextlib.contextmanager
def staged_dir(url: str, *, last: Sequence[str] = (), skip: Collection[str] = ()) -> Iterator[str]:
    """A local folder whose contents end up at ``url``.

    For a local ``url`` this is ``url`` itself. For an object store it is a temporary folder
    that is uploaded with :func:`upload_dir` (``last`` files last) when the block exits cleanly;
    when it raises, nothing (more) is uploaded. ``skip`` (read at exit, so the block may add
    to it) lists relative paths the block already put at ``url`` itself. The temporary folder
    is always removed.
    """
    if is_local(url):
        os.makedirs(url, exist_ok=True)
        yield url
        return
    tmp = tempfile.mkdtemp(prefix="sam2kf-stage-")
    try:
        yield tmp
        upload_dir(tmp, url, last=last, skip=skip)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ transactions (registry)
#: Lease of a lock file: a holder that has not released it by then is presumed dead.
DEFAULT_LEASE_S = 60.0


class LockBusyError(TimeoutError):
    """A lease lock stayed held by a live holder for longer than the caller would wait."""


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)


def _is_gcs(fs: fsspec.AbstractFileSystem) -> bool:
    return bool(_protocols(fs) & {"gs", "gcs"})


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    return bool(_protocols(fs) & {"s3", "s3a"})


def read_bytes_fresh(url: str) -> bytes | None:
    """Read an object straight from the store, or ``None`` when it does not exist.

    Unlike :func:`exists` followed by :func:`read_bytes`, this never answers from a listing
    cache of this process (gcsfs keeps one per filesystem object and another process may have
    written since), and it costs one request instead of two.
    """
    fs, path = get_fs(url)
    if isinstance(fs, LocalFileSystem):
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
    fs.invalidate_cache(path)
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None


def invalidate(url: str) -> None:
    """Forget this process's cached listings at and above ``url`` (before re-listing it)."""
    fs, path = get_fs(url)
    fs.invalidate_cache(path)


def _gcs_create(
    fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, generation: int = 0
) -> None:
    """One-request upload with ``ifGenerationMatch``: GCS refuses it (412) unless the object's
    live generation is ``generation`` (0: unless it does not exist).

    gcsfs maps 412 to ``FileExistsError``. A single media upload (not gcsfs's multipart or
    resumable forms) keeps the precondition and the payload in one request.
    """
    bucket, key = path.split("/", 1)
    root = str(fs.base).rstrip("/")
    if not root.endswith("/storage/v1"):
        raise ValueError(f"unexpected GCS API base URL {fs.base!r}")
    upload = root[: -len("/storage/v1")] + f"/upload/storage/v1/b/{bucket}/o"
    fs.call(
        "POST",
        upload,
        uploadType="media",
        name=key,
        ifGenerationMatch=str(generation),
        data=data,
        # (octet-stream: the emulator would parse a JSON body as the object's metadata)
        headers={"Content-Type": "application/octet-stream"},
        json_out=True,
    )


def _local_create(path: str, data: bytes) -> bool:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            # link() publishes the whole file at once and fails if the name exists (also on NFS).
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            pass  # no hard links here (some FUSE/PVC drivers): fall back to O_EXCL below
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def create_exclusive(url: str, data: bytes) -> bool:
    """Create ``url`` holding ``data`` only if nothing exists there yet; ``True`` if this call did.

    This is the store's own atomic create-if-absent, so of many concurrent callers (processes,
    pods) exactly one gets ``True``: local/PVC paths use ``link()`` (``O_CREAT|O_EXCL`` where
    hard links are unsupported), GCS a generation precondition (``ifGenerationMatch=0``), S3 a
    conditional write (``If-None-Match: *``, AWS S3 and recent MinIO; a store that ignores the
    header gives no exclusivity). Other fsspec protocols raise ``NotImplementedError``.

    A client-side retry of a create that did reach the store is answered "exists"; the object
    then holds our own ``data``, which is checked, so the call still returns ``True``.
    """
    fs, path = get_fs(url)
    if isinstance(fs, LocalFileSystem):
        return _local_create(path, data)
    if _is_gcs(fs):
        try:
            _gcs_create(fs, path, data)
        except FileExistsError:
            return read_bytes_fresh(url) == data
        fs.invalidate_cache(path)
        return True
    if _is_s3(fs):
        try:
            fs.pipe_file(path, data, mode="create")
        except (FileExistsError, OSError) as exc:
            text = str(exc).lower()
            if isinstance(exc, FileExistsError) or "precondition" in text or "conflict" in text:
                return read_bytes_fresh(url) == data
            raise
        return True
    raise NotImplementedError(
        f"{url}: no atomic create-if-absent on {sorted(_protocols(fs))}; "
        "use a local/PVC path, gs:// or s3://"
    )


def has_generations(url: str) -> bool:
    """Whether :func:`read_with_generation` / :func:`write_if_generation` work here (GCS)."""
    fs, _ = get_fs(url)
    return _is_gcs(fs)


def read_with_generation(url: str) -> tuple[bytes | None, int]:
    """``(content, generation)`` of a GCS object; ``(None, 0)`` when it does not exist.

    The generation is read first: content fetched after it is at least that new, so a
    :func:`write_if_generation` based on a stale pair fails instead of overwriting.
    """
    fs, path = get_fs(url)
    if not _is_gcs(fs):
        raise NotImplementedError(f"{url}: object generations exist on gs:// only")
    bucket, key = path.split("/", 1)
    for _ in range(20):
        try:
            meta = fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True)
        except FileNotFoundError:
            return None, 0
        generation = int(meta["generation"])
        try:
            return bytes(fs.cat_file(path, generation=generation)), generation
        except FileNotFoundError:
            continue  # replaced between the two requests: read the new one
    raise TimeoutError(f"{url} kept changing while it was read")


def write_if_generation(url: str, data: bytes, *, generation: int) -> bool:
    """Replace a GCS object only if its live generation is still ``generation`` (0: absent).

    ``False`` when another writer replaced it first (the caller re-reads and decides again).
    """
    fs, path = get_fs(url)
    if not _is_gcs(fs):
        raise NotImplementedError(f"{url}: object generations exist on gs:// only")
    try:
        _gcs_create(fs, path, data, generation=generation)
    except FileExistsError:
        return read_bytes_fresh(url) == data  # a retried request that had succeeded
    fs.invalidate_cache(path)
    return True


def _lock_holder(path: str) -> tuple[str, float, dict[str, Any]] | None:
    """``(token, expires, record)`` of the lock file at ``path``, or ``None`` if there is none.

    A file without a readable record (a holder that crashed between ``O_EXCL`` and its write)
    is identified by its inode and expires one lease after its modification time.
    """
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(raw)
        return str(rec["token"]), float(rec["expires"]), rec
    except (ValueError, KeyError, TypeError):
        token = f"ino{st.st_ino}-{st.st_mtime_ns}"
        return token, st.st_mtime + DEFAULT_LEASE_S, {"token": token}


def _remove_lock(path: str, token: str) -> bool:
    """Remove the lock file at ``path`` if (and only if) it is still ``token``'s.

    Whoever removes lock ``token`` (its holder releasing it, or a process breaking it after
    its lease ran out) first creates the marker ``<path>.rm-<token>`` exclusively, so only
    one process ever removes a given lock, and the lock cannot change between our check and
    our ``remove``: nobody else may remove it, and nobody can create a new one while it exists.
    """
    marker = f"{path}.rm-{token}"
    if not _local_create(marker, b""):
        return False  # someone else is removing this very lock
    try:
        holder = _lock_holder(path)
        if holder is None or holder[0] != token:
            return False
        os.remove(path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(marker)


@contextlib.contextmanager
def lease_lock(
    url: str, *, lease_s: float = DEFAULT_LEASE_S, wait_s: float = 120.0
) -> Iterator[dict[str, Any]]:
    """Hold the exclusive lock file ``url`` (local/PVC paths) for the duration of the block.

    The lock file is created atomically and records its holder (pid, host) and an expiry
    time ``lease_s`` ahead. A holder that died (SIGKILL, node loss) therefore blocks others
    for at most ``lease_s``: after that its lock is broken and taken over. The block must
    finish well within ``lease_s``; if it does not, another process may enter too, so callers
    that must never act twice also commit with :func:`create_exclusive`. Expiry compares wall
    clocks: hosts sharing a PVC need clocks closer than ``lease_s``.

    Raises :class:`LockBusyError` naming the holder when a live holder keeps the lock for
    longer than ``wait_s`` seconds.
    """
    fs, path = get_fs(url)
    if not isinstance(fs, LocalFileSystem):
        raise ValueError(f"{url}: lock files need a local or PVC path")
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        now = time.time()
        record = {
            "token": token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "acquired": now,
            "expires": now + lease_s,
        }
        if _local_create(path, json.dumps(record).encode()):
            break
        holder = _lock_holder(path)
        if holder is None:
            continue  # released meanwhile: try again at once
        other, expires, info = holder
        if time.time() > expires:
            _remove_lock(path, other)  # its holder is presumed dead: break the lock
            continue
        if time.monotonic() > deadline:
            raise LockBusyError(
                f"{url} is held by pid {info.get('pid', '?')} on {info.get('host', '?')} for "
                f"{max(expires - time.time(), 0.0):.0f} s more; wait, or delete it if that "
                "process is gone"
            )
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.2)
    try:
        yield record
    finally:
        _remove_lock(path, token)
