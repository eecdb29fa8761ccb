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
import shutil
import tempfile
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
    fs, path = get_fs(url)
    if isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        # Object stores publish an object only when its upload completes.
        with fs.open(path, "wb") as f:
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
