"""TensorBoard event files for any fsspec output URL (local path, gs://, s3://, minio://).

TensorBoard's writer appends to its event file on every flush. Object stores cannot append (an
object is replaced whole), and tensorboard's own fsspec layer would rewrite the object on every
flush, so the writer always writes into a local directory and :class:`TensorBoardMirror` uploads
the event files to ``<url>`` periodically (at most every ``interval_s``), at each checkpoint and
at the end. Each upload replaces an object whole, so a reader sees a complete older copy or a
complete newer one, never a torn file. A restarted run writes a new event file (TensorBoard names
them by time, host and pid) next to the old ones, and TensorBoard merges all files of a folder.

For a local ``url`` the writer writes there directly and syncing only flushes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

from sam2_core import storage

log = logging.getLogger(__name__)


class TensorBoardMirror:
    """Local log directory for a ``SummaryWriter`` whose files are mirrored to ``url``."""

    def __init__(self, url: str, *, interval_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.interval_s = interval_s
        self.remote = not storage.is_local(self.url)
        if self.remote:
            self.log_dir = tempfile.mkdtemp(prefix="sam2kf-tb-")
        else:
            self.log_dir = self.url
            os.makedirs(self.log_dir, exist_ok=True)
        #: size of each file at its last upload; unchanged files are not uploaded again
        self._uploaded: dict[str, int] = {}
        self._last_sync = time.monotonic()

    def sync(self) -> int:
        """Upload every event file that grew since the last sync; returns the number uploaded.

        Call after ``writer.flush()``. Never raises for a failed upload (training goes on and
        the next sync retries); the failure is logged.
        """
        self._last_sync = time.monotonic()
        if not self.remote:
            return 0
        uploaded = 0
        for name in sorted(os.listdir(self.log_dir)):
            local = os.path.join(self.log_dir, name)
            if not os.path.isfile(local):
                continue
            size = os.path.getsize(local)
            if self._uploaded.get(name) == size:
                continue
            try:
                with open(local, "rb") as f:
                    data = f.read()
                storage.write_bytes_atomic(storage.join(self.url, name), data)
            except Exception as e:  # network hiccup: keep training, retry at the next sync
                log.warning("could not mirror %s to %s: %s", name, self.url, e)
                continue
            self._uploaded[name] = len(data)
            uploaded += 1
        return uploaded

    def due(self) -> bool:
        """Whether ``interval_s`` has passed since the last sync."""
        return time.monotonic() - self._last_sync >= self.interval_s

    def close(self) -> None:
        """Final sync and removal of the local temporary directory (call after writer.close())."""
        self.sync()
        if self.remote:
            shutil.rmtree(self.log_dir, ignore_errors=True)
