"""Registry transactions: concurrent promotions, lease locks, rejected inputs, crash leftovers.

The races run real processes (forked, so they start fast on a small machine) that wait on a
barrier and then promote at once, on a local folder and on a GCS API server. Each process
reports its outcome only through its exit status (0 promoted, 3 champion kept, 4 lost race);
the checks then hold the registry to the promotion guarantees: one promotion per predecessor,
a champion that only gets better, a history that is an intact chain, and one event per process
that matches its exit status.

The GCS server is ``gcp-storage-emulator``, which ignores request preconditions; the fixture
adds ``ifGenerationMatch`` the way the GCS JSON API documents it (412 when the object's live
generation differs, 0 meaning "does not exist"), on the single-request uploads the registry uses.
"""

from __future__ import annotations

import functools
import http.server
import itertools
import json
import multiprocessing
import os
import random
import re
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from sam2_core import storage
from sam2_core.registry import (
    EXIT_STATUS,
    KEPT,
    LOST_RACE,
    PROMOTED,
    ModelRecord,
    PromotionRaceLost,
    Registry,
)

MARGIN = 0.5
RACERS = 50


# ------------------------------------------------------------------------- GCS with preconditions
def _precondition_handler(server_mod: object) -> type:
    base = server_mod.RequestHandler  # type: ignore[attr-defined]
    from gcp_storage_emulator.exceptions import NotFound

    class Handler(base):  # type: ignore[misc, valid-type]
        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parts.query)
            upload = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", parts.path)
            if upload and "ifGenerationMatch" in query and "name" in query:
                try:
                    obj = self.storage.get_file_obj(upload.group(1), query["name"][0])
                    live = str(obj["generation"])
                except NotFound:
                    live = "0"
                if live != query["ifGenerationMatch"][0]:
                    self.rfile.read(int(self.headers.get("content-length") or 0))
                    body = json.dumps(
                        {"error": {"code": 412, "message": "conditionNotMet"}}
                    ).encode()
                    self.send_response(412)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
            super().do_POST()

    return Handler


@pytest.fixture(scope="module")
def gcs_url() -> Iterator[str]:
    server_mod = pytest.importorskip("gcp_storage_emulator.server")
    from gcp_storage_emulator.handlers import buckets
    from gcp_storage_emulator.storage import Storage

    class Server(http.server.HTTPServer):
        request_queue_size = 256  # 50 racers connect at once
        allow_reuse_address = True

    store = Storage(use_memory_fs=True)
    buckets.create_bucket("race", store)
    httpd = Server(("127.0.0.1", 0), functools.partial(_precondition_handler(server_mod), store))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{httpd.server_address[1]}")
    mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    # No probing for a GCE metadata server: 50 processes each waiting on its timeout.
    mp.setenv("NO_GCE_CHECK", "true")
    metadata = pytest.importorskip("google.auth.compute_engine._metadata")
    mp.setattr(metadata, "_NO_GCE_CHECK", True)
    try:
        yield "gs://race"
    finally:
        mp.undo()
        httpd.shutdown()
        httpd.server_close()


def test_emulator_honours_generation_precondition(gcs_url: str) -> None:
    url = f"{gcs_url}/pre/once.json"
    assert storage.create_exclusive(url, b"first")
    assert not storage.create_exclusive(url, b"second")
    assert storage.read_bytes_fresh(url) == b"first"


# ------------------------------------------------------------------------------------ races
def _record(jf: float, run: str, model: str) -> ModelRecord:
    return ModelRecord(
        model_uri=model, jf=jf, dataset_name="demo", dataset_version="v1", run_id=run
    )


def _racer(url: str, run: str, jf: float, model: str, barrier: Barrier, lease_s: float) -> None:
    """Child process body: promote once, report the outcome as the exit status only."""
    code = 1
    try:
        barrier.wait(timeout=120)
        decision = Registry(url).promote(_record(jf, run, model), margin=MARGIN, lease_s=lease_s)
        code = decision.exit_status
    except PromotionRaceLost:
        code = EXIT_STATUS[LOST_RACE]
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _race(url: str, model: str, n: int, seed: int, lease_s: float) -> dict[str, tuple[float, int]]:
    """Run ``n`` concurrent promotions; returns run id -> (J&F, exit status)."""
    rng = random.Random(seed)
    jfs = [round(20 + 60 * i / n + rng.uniform(0, 0.3), 3) for i in range(n)]
    rng.shuffle(jfs)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = {}
    for i, jf in enumerate(jfs):
        run = f"run{i:02d}"
        p = ctx.Process(target=_racer, args=(url, run, jf, model, barrier, lease_s))
        p.start()
        procs[run] = (jf, p)
    out = {}
    for run, (jf, p) in procs.items():
        p.join(timeout=240)
        assert p.exitcode is not None, f"{run} did not finish"
        out[run] = (jf, p.exitcode)
    return out


def _check(url: str, results: dict[str, tuple[float, int]]) -> None:
    reg = Registry(url)
    statuses = {code for _, code in results.values()}
    assert statuses <= set(EXIT_STATUS.values()), f"a racer crashed: {results}"
    by_outcome = {
        outcome: {run for run, (_, c) in results.items() if c == code}
        for outcome, code in EXIT_STATUS.items()
    }
    # The chain: promotions 1..n, each naming the one before (checked by chain()), so there is
    # exactly one promotion per predecessor; and every promotion is by at least the margin.
    chain = reg.chain()
    assert len({e["previous_event_id"] for e in chain}) == len(chain)
    assert {e["run_id"] for e in chain} == by_outcome[PROMOTED]
    assert len(chain) == len(by_outcome[PROMOTED])
    jfs = [e["challenger"]["jf"] for e in chain]
    assert all(b - a >= MARGIN for a, b in itertools.pairwise(jfs)), jfs
    for prev, event in zip([None, *chain], chain, strict=False):
        assert event["previous_champion"] == (prev["challenger"] if prev else None)
    # The champion is the chain's end, and the pointer caught up with it.
    champ = reg.champion()
    assert champ is not None and champ.run_id == chain[-1]["run_id"]
    pointer = json.loads(storage.read_bytes_fresh(reg.champion_url) or b"{}")
    assert pointer["seq"] == len(chain) and pointer["champion"]["run_id"] == champ.run_id
    # Nobody who finished lost to a worse model: the champion is the best J&F of the racers
    # that did not give up.
    finished = [jf for run, (jf, _) in results.items() if run not in by_outcome[LOST_RACE]]
    assert champ.jf == max(finished)
    # One event per process, and it says what the exit status says.
    events = reg.history()
    assert len({e["id"] for e in events}) == len(events)
    runs = [e["run_id"] for e in events]
    assert sorted(runs) == sorted(by_outcome[PROMOTED] | by_outcome[KEPT])
    for event in events:
        if event["event"] == "rejected":
            jf = results[event["run_id"]][0]
            # Kept because the champion it was compared with was better (minus the margin).
            assert event["decision"]["champion_jf"] > jf - MARGIN
            assert event["previous_event_id"] in {e["id"] for e in chain}
    leftovers = [n for n in storage.listdir(storage.join(url, "history")) if ".tmp-" in n]
    assert leftovers == []


def _run_race(url: str, tmp_path: Path, n: int, *, lease_s: float = 60.0) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    # Import the store's client (gcsfs, google-auth) once here, not in each forked racer.
    assert Registry(url).champion() is None
    start = time.monotonic()
    results = _race(url, str(model), n, seed=n, lease_s=lease_s)
    took = time.monotonic() - start
    _check(url, results)
    counts = {o: sum(c == code for _, c in results.values()) for o, code in EXIT_STATUS.items()}
    retried = sum(e.get("attempts", 1) > 1 for e in Registry(url).history())
    print(f"{n} racers on {url}: {took:.1f} s, {counts}, {retried} decided again after a lost race")


def test_race_local(tmp_path: Path) -> None:
    _run_race(str(tmp_path / "reg"), tmp_path, RACERS)


def test_race_local_with_expiring_leases(tmp_path: Path) -> None:
    """Leases of 0 s: holders are constantly presumed dead and their locks broken, so several
    racers are inside at once; the atomic create of each promotion still decides alone."""
    _run_race(str(tmp_path / "reg"), tmp_path, RACERS, lease_s=0.0)


def test_race_gcs(gcs_url: str, tmp_path: Path) -> None:
    _run_race(f"{gcs_url}/registry", tmp_path, RACERS)


def _creator(url: str, data: bytes, barrier: Barrier) -> None:
    code = 1
    try:
        barrier.wait(timeout=120)
        code = 0 if storage.create_exclusive(url, data) else 3
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_create_exclusive_race(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The commit primitive itself, without the lock: of 20 creators exactly one wins."""
    base = str(tmp_path) if where == "local" else request.getfixturevalue("gcs_url")
    url = storage.join(base, "excl", "link.json")
    storage.exists(url)  # import the client before forking
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(20)
    procs = [
        ctx.Process(target=_creator, args=(url, f"writer {i}".encode(), barrier)) for i in range(20)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    codes = [p.exitcode for p in procs]
    assert sorted(codes) == [0] + [3] * 19
    winner = codes.index(0)
    assert storage.read_bytes_fresh(url) == f"writer {winner}".encode()
