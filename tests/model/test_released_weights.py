"""Released checkpoints by name and the resumable, verified download, against a loopback server.

No test reaches the internet: a ``http.server`` on 127.0.0.1 serves a small file with ``Range``
support, and can cut a transfer part-way, ignore ``Range`` or announce another size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sam2_core import storage
from sam2_core.download import DownloadError, download, normalise_sha256
from sam2_core.model import released
from sam2_core.model.released import (
    MIRROR_ENV,
    RELEASED,
    RELEASED_NAMES,
    UnknownCheckpointName,
    resolve_checkpoint,
)

PAYLOAD = random.Random(0).randbytes(65_536)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
ETAG = '"v1"'


class _Server(ThreadingHTTPServer):
    """Loopback server state: the files, the requests seen and the misbehaviours to show."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.cut_at: int | None = None  # next response stops after this many bytes of the file
        self.cut_times = 1
        self.honour_range = True
        self.extra_length = 0  # announce this many bytes more than the file has

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(
            {
                "path": self.path,
                "range": self.headers.get("Range"),
                "if_range": self.headers.get("If-Range"),
            }
        )
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.match(r"^bytes=(\d+)-$", self.headers.get("Range") or "")
        if match and srv.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start + srv.extra_length))
        self.send_header("ETag", ETAG)
        self.end_headers()
        body = data[start:]
        if srv.cut_at is not None and srv.cut_times > 0:
            srv.cut_times -= 1
            body = data[start : max(start, srv.cut_at)]
        self.wfile.write(body)
        # HTTP/1.0: the connection closes after this response, so a short body is a cut.


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.files["/files/sam2.1_hiera_tiny.pt"] = PAYLOAD
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def _url(server: _Server) -> str:
    return f"{server.base}/files/sam2.1_hiera_tiny.pt"


def _leftovers(folder: Path) -> list[str]:
    """Names in ``folder`` apart from the lock file."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# ------------------------------------------------------------------------------------ download
def test_interrupted_transfer_resumes_with_a_range_request(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "w.pt"
    server.cut_at = 20_000
    with pytest.raises(DownloadError) as exc:
        download(_url(server), str(dest), retries=0, progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and "stopped at 20000 of 65536 bytes" in msg and "resume" in msg
    # Nothing looks complete: only the partial file (and its record) are there.
    assert _leftovers(dest.parent) == ["w.pt.part", "w.pt.part.json"]
    assert (dest.parent / "w.pt.part").stat().st_size == 20_000

    got = download(_url(server), str(dest), retries=0, progress=False)
    assert server.requests[-1]["range"] == "bytes=20000-"
    assert server.requests[-1]["if_range"] == ETAG
    assert (got.resumed_from, got.fetched_bytes, got.size) == (20_000, 45_536, 65_536)
    assert got.sha256 == SHA and not got.from_cache
    assert dest.read_bytes() == PAYLOAD
    assert (tmp_path / "cache" / "w.pt.sha256").read_text() == f"{SHA}  w.pt\n"
    assert _leftovers(dest.parent) == ["w.pt", "w.pt.sha256"]


def test_retries_resume_within_one_call(server: _Server, tmp_path: Path) -> None:
    server.cut_at, server.cut_times = 10_000, 2
    got = download(_url(server), str(tmp_path / "w.pt"), retries=2, backoff_s=0, progress=True)
    assert [r["range"] for r in server.requests] == [None, "bytes=10000-", "bytes=10000-"]
    assert got.sha256 == SHA and got.fetched_bytes == 65_536 and got.resumed_from == 0


def test_server_ignoring_range_restarts_cleanly(server: _Server, tmp_path: Path) -> None:
    server.cut_at = 30_000
    with pytest.raises(DownloadError):
        download(_url(server), str(tmp_path / "w.pt"), retries=0, progress=False)
    server.honour_range = False
    got = download(_url(server), str(tmp_path / "w.pt"), retries=0, progress=False)
    assert server.requests[-1]["range"] == "bytes=30000-"
    assert got.resumed_from == 0 and got.fetched_bytes == 65_536
    assert (tmp_path / "w.pt").read_bytes() == PAYLOAD


def test_a_complete_partial_file_is_not_fetched_again(server: _Server, tmp_path: Path) -> None:
    # A crash between the last byte and the rename: the server answers 416 for the range.
    (tmp_path / "w.pt.part").write_bytes(PAYLOAD)
    storage.write_json_atomic(
        str(tmp_path / "w.pt.part.json"), {"url": _url(server), "total": 65_536, "validator": ETAG}
    )
    got = download(_url(server), str(tmp_path / "w.pt"), progress=False)
    assert got.sha256 == SHA and got.fetched_bytes == 0
    assert [r["range"] for r in server.requests] == ["bytes=65536-"]


def test_wrong_size_is_refused(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError, match="announces 65536 bytes, expected 70000"):
        download(_url(server), str(dest), size=70_000, progress=False)
    assert _leftovers(tmp_path) == []
    # A server that announces more than it sends: the size check keeps it incomplete.
    server.extra_length = 10
    with pytest.raises(DownloadError, match="stopped at 65536 of 65546 bytes"):
        download(_url(server), str(dest), retries=1, backoff_s=0, progress=False)
    assert not dest.exists() and not (tmp_path / "w.pt.sha256").exists()


def test_wrong_sha256_is_refused_and_nothing_kept(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError) as exc:
        download(_url(server), str(dest), sha256="0" * 64, progress=False)
    assert "\n" not in str(exc.value) and f"sha256 {SHA} does not match" in str(exc.value)
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        download(_url(server), str(dest), sha256="abc", progress=False)
    assert normalise_sha256(f"SHA256:{SHA.upper()}") == SHA


def test_cache_hit_is_reused_without_network(server: _Server, tmp_path: Path) -> None:
    dest = str(tmp_path / "w.pt")
    first = download(_url(server), dest, progress=False)
    server.requests.clear()
    again = download(_url(server), dest, progress=False)
    pinned = download(_url(server), dest, sha256=f"sha256:{SHA}", progress=False)
    assert server.requests == []
    assert again.from_cache and pinned.from_cache and again.sha256 == pinned.sha256 == first.sha256
    # A pin that the cached bytes do not match is refused, still without a request.
    (tmp_path / "w.pt").write_bytes(b"corrupted")
    with pytest.raises(DownloadError, match=r"delete .* to download it again"):
        download(_url(server), dest, sha256=SHA, progress=False)
    assert server.requests == []


def test_concurrent_callers_download_once(server: _Server, tmp_path: Path) -> None:
    dest = str(tmp_path / "w.pt")
    results: list[str] = []

    def fetch() -> None:
        results.append(download(_url(server), dest, progress=False).sha256)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [SHA] * 3
    assert len(server.requests) == 1


def test_object_store_cache_uploads_then_marks(server: _Server) -> None:
    dest = f"memory://sam2kf-test-{uuid.uuid4().hex[:8]}/cache/w.pt"
    try:
        got = download(_url(server), dest, progress=False)
        assert storage.read_bytes(dest) == PAYLOAD and got.sha256 == SHA
        assert storage.read_text(dest + ".sha256").split()[0] == SHA
        server.requests.clear()
        assert download(_url(server), dest, progress=False).from_cache
        assert server.requests == []
    finally:
        storage.remove(dest.rsplit("/cache/", 1)[0])


# --------------------------------------------------------------------------- released by name
def test_table_has_meta_urls_and_existing_model_configs() -> None:
    from sam2_core.model.build import CONFIG_DIR, OFFICIAL_CHECKPOINTS

    assert RELEASED_NAMES == (
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_small",
        "sam2.1_hiera_base_plus",
        "sam2.1_hiera_large",
        "sam2_hiera_tiny",
        "sam2_hiera_small",
        "sam2_hiera_base_plus",
        "sam2_hiera_large",
    )
    b = RELEASED["sam2.1_hiera_base_plus"]
    assert (
        b.url
        == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt"
    )
    assert (b.model, b.file, b.version, b.overrides) == (
        "sam2.1_hiera_b+",
        "sam2.1_hiera_base_plus.pt",
        "2.1",
        (),
    )
    old = RELEASED["sam2_hiera_large"]
    assert old.url == "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
    assert old.model == "sam2.1_hiera_l" and old.overrides == released.SAM2_0_OVERRIDES
    for r in RELEASED.values():
        assert (CONFIG_DIR / f"{r.model}.yaml").is_file()
        if r.version == "2.1":
            assert OFFICIAL_CHECKPOINTS[r.file] == r.model
    assert released.for_model("sam2.1_hiera_s") == RELEASED["sam2.1_hiera_small"]
    assert released.for_model("tiny") is None


def test_sam2_0_overrides_drop_exactly_the_sam2_1_additions() -> None:
    from sam2_core.model.build import build_model

    new = set(build_model("sam2.1_hiera_t", device="meta").state_dict())
    old = set(
        build_model(
            "sam2.1_hiera_t", device="meta", overrides=list(released.SAM2_0_OVERRIDES)
        ).state_dict()
    )
    assert new - old == {
        "no_obj_embed_spatial",
        "obj_ptr_tpos_proj.weight",
        "obj_ptr_tpos_proj.bias",
    }
    assert old <= new


def test_released_name_is_downloaded_once_into_the_cache(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Meta's URL replaced by the loopback one: the name -> URL -> cache path is what is tested.
    tiny = RELEASED["sam2.1_hiera_tiny"]
    monkeypatch.setitem(RELEASED, tiny.name, dataclasses.replace(tiny, url=_url(server)))
    cache = str(tmp_path / "pvc" / "checkpoints")
    first = resolve_checkpoint("sam2.1_hiera_tiny", cache=cache, progress=False)
    assert first.path == storage.join(cache, "sam2.1_hiera_tiny.pt")
    assert first.downloaded and first.sha256 == SHA and first.release == RELEASED[tiny.name]
    again = resolve_checkpoint(" sam2.1_hiera_tiny ", cache=cache, sha256=SHA)
    assert again.origin == "cache" and again.path == first.path and len(server.requests) == 1
    assert "released checkpoint sam2.1_hiera_tiny" in again.describe()
    # "released" = the released checkpoint of the model being built.
    sized = resolve_checkpoint("released", model="sam2.1_hiera_t", cache=cache)
    assert sized.release == RELEASED[tiny.name] and sized.origin == "cache"
    wrong_size = re.escape("is for model sam2.1_hiera_t, not sam2.1_hiera_l")
    with pytest.raises(ValueError, match=wrong_size):
        resolve_checkpoint("sam2.1_hiera_tiny", model="sam2.1_hiera_l", cache=cache)
    with pytest.raises(UnknownCheckpointName, match="needs a model with released weights"):
        resolve_checkpoint("released", model="tiny", cache=cache)
    assert len(server.requests) == 1


def test_mirror_env_var_http_and_folder(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/mirror/sam2_hiera_small.pt"] = PAYLOAD
    monkeypatch.setenv(MIRROR_ENV, f"{server.base}/mirror/")
    got = resolve_checkpoint("sam2_hiera_small", cache=str(tmp_path / "c"), progress=False)
    assert [r["path"] for r in server.requests] == ["/mirror/sam2_hiera_small.pt"]
    assert got.path == str(tmp_path / "c" / "sam2_hiera_small.pt") and got.sha256 == SHA
    assert got.overrides == released.SAM2_0_OVERRIDES
    # A pre-staged folder is used in place, without network and without writing into it.
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "sam2.1_hiera_large.pt").write_bytes(PAYLOAD)
    monkeypatch.setenv(MIRROR_ENV, str(staged))
    server.requests.clear()
    hit = resolve_checkpoint("sam2.1_hiera_large", cache=str(tmp_path / "c"), sha256=SHA)
    assert hit.path == str(staged / "sam2.1_hiera_large.pt") and hit.origin == "mirror"
    assert (
        hit.sha256 == SHA
        and server.requests == []
        and _leftovers(staged) == ["sam2.1_hiera_large.pt"]
    )
    with pytest.raises(DownloadError) as exc:
        resolve_checkpoint("sam2.1_hiera_small", cache=str(tmp_path / "c"))
    assert MIRROR_ENV in str(exc.value) and "not found" in str(exc.value)
    # The mirror= argument wins over the environment.
    other = resolve_checkpoint(
        "sam2_hiera_small", cache=str(tmp_path / "c2"), mirror=f"{server.base}/mirror"
    )
    assert other.sha256 == SHA and server.requests[-1]["path"] == "/mirror/sam2_hiera_small.pt"


def test_unreachable_download_suggests_the_mirror(tmp_path: Path) -> None:
    srv = _Server()  # bound but never serving: port closed right away
    port = srv.server_address[1]
    srv.server_close()
    with pytest.raises(DownloadError) as exc:
        resolve_checkpoint(
            "sam2.1_hiera_tiny",
            cache=str(tmp_path),
            mirror=f"http://127.0.0.1:{port}/m",
            retries=0,
        )
    msg = str(exc.value)
    assert "\n" not in msg and MIRROR_ENV in msg and "failed (cannot connect" in msg


def test_unknown_names_and_passthrough(tmp_path: Path) -> None:
    with pytest.raises(UnknownCheckpointName) as exc:
        resolve_checkpoint("sam2.1_hiera_huge", cache=str(tmp_path))
    msg = str(exc.value)
    assert "\n" not in msg and all(name in msg for name in RELEASED_NAMES)
    with pytest.raises(
        UnknownCheckpointName, match=re.escape("its released checkpoint is sam2.1_hiera_base_plus")
    ):
        resolve_checkpoint("sam2.1_hiera_b+", cache=str(tmp_path))
    for spec in ("runs/r1/model_final.pt", "gs://bucket/m.pt", "sam2.1_hiera_tiny.pt", ""):
        r = resolve_checkpoint(spec, cache=str(tmp_path))
        assert (r.path, r.release, r.sha256, r.origin) == (spec, None, None, "path")
    local = tmp_path / "ft.pt"
    local.write_bytes(PAYLOAD)
    assert resolve_checkpoint(str(local), sha256=SHA).sha256 == SHA
    with pytest.raises(DownloadError, match="does not match the pinned"):
        resolve_checkpoint(str(local), sha256="1" * 64)
    with pytest.raises(ValueError, match="is a folder"):
        resolve_checkpoint(str(tmp_path), sha256=SHA)
    assert list(tmp_path.iterdir()) == [local]  # nothing was downloaded or recorded


def test_a_file_changed_on_the_server_is_fetched_afresh(server: _Server, tmp_path: Path) -> None:
    server.cut_at = 20_000
    with pytest.raises(DownloadError):
        download(_url(server), str(tmp_path / "w.pt"), retries=0, progress=False)
    server.files["/files/sam2.1_hiera_tiny.pt"] = new = PAYLOAD[:50_000]
    got = download(_url(server), str(tmp_path / "w.pt"), retries=0, progress=False)
    # The ranged answer's total differs from the first one's: the partial bytes are dropped.
    assert [r["range"] for r in server.requests] == [None, "bytes=20000-", None]
    assert got.sha256 == hashlib.sha256(new).hexdigest() and got.resumed_from == 0
    assert (tmp_path / "w.pt").read_bytes() == new


def test_unwritable_cache_is_one_line(server: _Server, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DownloadError) as exc:
        download(_url(server), str(blocker / "sub" / "w.pt"), progress=False)
    assert "\n" not in str(exc.value) and "give a writable cache folder" in str(exc.value)
    assert server.requests == []
