"""Fixtures for the data tests: a real GCS-API HTTP emulator on 127.0.0.1 for gs:// round trips.

``gcs_emulator`` starts ``gcp-storage-emulator`` (the PyPI package) as its own process, points
gcsfs at it through ``STORAGE_EMULATOR_HOST`` and yields ``gs://<bucket>``; ``gcs_url`` gives
each test a fresh prefix under that bucket so tests never see each other's objects.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

EMULATOR_BUCKET = "sam2kf-test"


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"gcp-storage-emulator did not answer {url} within {timeout:.0f} s")


@contextlib.contextmanager
def run_gcs_emulator(bucket: str = EMULATOR_BUCKET) -> Iterator[str]:
    """Start the emulator process, export ``STORAGE_EMULATOR_HOST``, yield ``gs://<bucket>``.

    Usable outside pytest too (the loader benchmark uses it).
    """
    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        bucket,
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST",)}
    try:
        _wait_until_up(f"{host}/storage/v1/b/{bucket}", proc)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        # gcsfs otherwise probes bucket types over gRPC and stalls on every call.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        _clear_gcsfs_cache()
        yield f"gs://{bucket}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_gcsfs_cache()


def _clear_gcsfs_cache() -> None:
    """Drop cached gcsfs instances so none keeps pointing at a stopped emulator."""
    try:
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()
    except Exception:  # pragma: no cover - gcsfs missing
        pass


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """Base URL ``gs://sam2kf-test`` of a bucket on a real, in-memory GCS-API emulator."""
    with run_gcs_emulator() as base:
        yield base


@pytest.fixture
def gcs_url(gcs_emulator: str) -> str:
    """A fresh, empty ``gs://`` prefix for one test."""
    return f"{gcs_emulator}/{uuid.uuid4().hex[:12]}"
