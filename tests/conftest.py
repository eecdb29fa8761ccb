"""Shared test fixtures: the committed reference files (tests/fixtures), GPU skipping."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# gcsfs probes bucket types over gRPC before anything else; against the HTTP emulator that
# stalls 60 s per call. Must be set before gcsfs is imported anywhere.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


#: Committed copies of the reference files the tests read (Meta's golden outputs, CRD schemas);
#: same layout as the project's ``../shared/`` folder. Provenance: tests/fixtures/README.md.
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def external_shared_dir() -> Path:
    """``$SAM2KF_SHARED`` or ``../shared`` next to the repository: only for data that may not be
    committed (the real SA-V annotation files); tests needing it skip where it is absent."""
    env = os.environ.get("SAM2KF_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The reference folder every test can rely on: ``tests/fixtures`` (``golden/``,
    ``k8s-schemas/``), committed, so a fresh clone runs the same tests as CI."""
    return FIXTURES


@pytest.fixture(scope="session")
def golden(shared: Path) -> Path:
    """Golden outputs of Meta's official SAM 2 code (``tests/fixtures/golden``)."""
    return shared / "golden"


@pytest.fixture(scope="session")
def real_sav() -> Path:
    """The real SA-V example annotations (``<shared>/real``): licensed data files that must not
    be committed, so this one skips where the external reference folder is absent."""
    d = external_shared_dir() / "real"
    if not d.is_dir():
        pytest.skip(f"real SA-V annotations {d} are absent (set SAM2KF_SHARED to a copy)")
    return d


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture()
def published_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URLs of the whole objects published through ``storage.write_bytes_atomic``, in order
    (the real write still happens): tests of "marker last" ordering read it."""
    from sam2_core import storage

    order: list[str] = []
    real = storage.write_bytes_atomic

    def spy(url: str, data: bytes) -> None:
        real(url, data)
        order.append(url)

    monkeypatch.setattr(storage, "write_bytes_atomic", spy)
    return order


@pytest.fixture(autouse=True)
def _isolated_root_logging() -> Iterator[None]:
    """Each test leaves the root logger's handlers and level as it found them: a handler added
    during a test (the CLI's, kfp.local's) may hold that test's captured stream, which pytest
    closes afterwards, and a later test logging through it would fail."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.fixture()
def file_server() -> Iterator[Callable[[Path], tuple[str, list[str]]]]:
    """Serve a folder over HTTP on 127.0.0.1 (a stand-in for a download host):
    ``file_server(folder)`` -> ``(base URL, paths requested so far)``; stopped after the test."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> tuple[str, list[str]]:
        seen: list[str] = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        srv = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", seen

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()
