"""Training checkpoints on any fsspec URL: atomic ``step-NNNNNN/`` directories, keep-last-K, resume.

Layout under ``<output_dir>/checkpoints/``::

    step-000100/state.pt     full training state (model, optimizer, scaler, step, epoch, data
    step-000100/_COMPLETE    position, RNG states, ...); the marker is written last
    best/state.pt + _COMPLETE

Locally a checkpoint is written into a hidden temporary directory that is renamed into place
(the rename is atomic), so a crash never leaves a ``step-*`` directory behind that looks complete.
A failed write removes its temporary directory, leftovers of killed writes (``.tmp-*``) are
swept before the first write, and a full disk is one :class:`CheckpointDiskFullError` line naming
the folder and the space needed. On object stores, where renames are copies, ``state.pt`` is
uploaded first and the marker last; a directory without marker is ignored (and cleaned up). Loading uses ``torch.load(weights_only=True)``:
every state we save consists of tensors and plain Python containers only.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import random
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sam2_core import storage

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
_STEP_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used (corrupt or incomplete); an older one is tried."""


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def _serialise(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


class CheckpointDiskFullError(OSError):
    """No space left for a checkpoint; ``str()`` is one line naming the folder and the sizes."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _free_bytes(folder: str) -> int | None:
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def _disk_full(folder: str, name: str, need: int) -> CheckpointDiskFullError:
    free = _free_bytes(folder)
    have = "unknown" if free is None else _mb(free)
    return CheckpointDiskFullError(
        f"{folder}: no space left for checkpoint {name}: it needs {_mb(need)}, {have} free; "
        "free space there or write the run to a larger volume"
    )


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_dir(url: str, data: bytes, info: dict[str, Any]) -> None:
    """Write ``state.pt`` + marker into ``url`` so that it appears complete only at the end.

    Locally the files go to a hidden ``.tmp-<name>-*`` folder that is renamed into place; on
    any failure that folder is removed again (so retries cannot fill the disk with leftovers)
    and a replaced directory is put back. A full disk (checked up front, and ``ENOSPC`` /
    ``EDQUOT`` while writing) raises :class:`CheckpointDiskFullError`.
    """
    if storage.is_local(url):
        _write_dir_local(url, data, info)
        return
    try:
        if storage.exists(url):
            storage.remove(url)
        storage.write_bytes_atomic(storage.join(url, STATE_FILE), data)
        storage.mark_complete(url, info)
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: no marker, so it is ignored anyway
            storage.remove(url)
        raise


def _write_dir_local(url: str, data: bytes, info: dict[str, Any]) -> None:
    _fs, path = storage.get_fs(url)
    path = path.rstrip("/")
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    need = len(data) + 4096  # state.pt plus the marker's block
    free = _free_bytes(parent)
    if free is not None and free < need:
        raise _disk_full(parent, name, need)
    tmp = os.path.join(parent, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(tmp)
        with open(os.path.join(tmp, STATE_FILE), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        storage.mark_complete(tmp, info)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(exc):
            raise _disk_full(parent, name, need) from exc
        raise
    if not os.path.exists(path):
        os.replace(tmp, path)
        return
    # Replacing a directory (e.g. "best"): move the old one aside first, put it back on failure.
    old = f"{tmp}-old"
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_state(url: str, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint directory's state (weights_only=True)."""
    data = storage.read_bytes(storage.join(url, STATE_FILE))
    state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{url}/{STATE_FILE}: not a checkpoint dict")
    return state


@dataclass
class CheckpointManager:
    """Saves and finds training checkpoints under ``root`` (a local path or fsspec URL)."""

    root: str
    keep_last: int = 3
    _swept: bool = field(default=False, init=False, repr=False)

    def sweep_orphans(self) -> list[str]:
        """Remove ``.tmp-*`` folders left by writes that were killed; returns their names.

        Done before the first write of this manager (only rank 0 writes, and no write of this
        run can be in progress then), so a crash-looping job cannot fill the disk with them.
        """
        if not storage.is_local(self.root):
            return []
        names = [n for n in storage.listdir(self.root) if n.startswith(".tmp-")]
        for name in names:
            log.info("removing leftover temporary checkpoint folder %s", name)
            shutil.rmtree(os.path.join(storage.get_fs(self.root)[1], name), ignore_errors=True)
        return names

    def _sweep_once(self) -> None:
        if not self._swept:
            self.sweep_orphans()
            self._swept = True

    def step_dirs(self) -> list[tuple[int, str]]:
        """``(step, url)`` of every ``step-*`` directory, newest first (complete or not)."""
        found = []
        for name in storage.listdir(self.root):
            m = _STEP_RE.match(name)
            if m:
                found.append((int(m.group(1)), storage.join(self.root, name)))
        return sorted(found, reverse=True)

    def save(self, step: int, state: dict[str, Any]) -> str:
        """Write ``step-NNNNNN/`` and prune old ones; returns its URL. Call on rank 0 only."""
        self._sweep_once()
        url = storage.join(self.root, step_dir_name(step))
        _write_dir(url, _serialise(state), {"step": step})
        self.prune()
        log.info("saved checkpoint %s", url)
        return url

    def save_best(self, step: int, state: dict[str, Any], metric: dict[str, float]) -> str:
        self._sweep_once()
        url = storage.join(self.root, "best")
        _write_dir(url, _serialise(state), {"step": step, **metric})
        log.info("saved best checkpoint (step %d, %s)", step, metric)
        return url

    def prune(self) -> None:
        """Keep the newest ``keep_last`` complete checkpoints; drop incomplete leftovers."""
        complete = 0
        for _step, url in self.step_dirs():
            if not storage.is_complete(url):
                storage.remove(url)
                continue
            complete += 1
            if self.keep_last > 0 and complete > self.keep_last:
                storage.remove(url)
        self.sweep_orphans()

    def load_latest(
        self, *, map_location: str | torch.device = "cpu"
    ) -> tuple[int, dict[str, Any]] | None:
        """Newest loadable checkpoint ``(step, state)``; corrupt ones are skipped with a warning."""
        for step, url in self.step_dirs():
            if not storage.is_complete(url):
                log.info("ignoring incomplete checkpoint %s", url)
                continue
            try:
                state = load_state(url, map_location=map_location)
            except Exception as e:  # corrupt file, truncated upload, unreadable pickle...
                msg = (
                    f"checkpoint {url} is unreadable ({type(e).__name__}: {e}); trying an older one"
                )
                warnings.warn(msg, CheckpointWarning, stacklevel=2)
                log.warning(msg)
                continue
            return step, state
        return None


# ----------------------------------------------------------------------------------------------
# RNG state in weights_only-compatible form


def rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch RNG states as tensors and plain containers."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
