"""Registry safety: rejected inputs, lease locks of dead holders, crash leftovers, old layouts."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from sam2_core import storage
from sam2_core.registry import (
    EXIT_STATUS,
    KEPT,
    LOCK_FILE,
    PROMOTED,
    ModelRecord,
    PromotionRaceLost,
    Registry,
    RegistryError,
    RegistryInputError,
)


@pytest.fixture
def model(tmp_path: Path) -> str:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    return str(path)


def _rec(jf: float, run: str, model: str, *, version: str = "v1") -> ModelRecord:
    return ModelRecord(
        model_uri=model, jf=jf, dataset_name="demo", dataset_version=version, run_id=run
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- rejected inputs
@pytest.mark.parametrize("jf", [math.nan, math.inf, -math.inf, -5.0, 150.0, 100.0001])
def test_bad_challenger_jf_is_refused(jf: float, model: str, tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    with pytest.raises(RegistryInputError) as err:
        Registry(str(reg_dir)).promote(_rec(jf, "r", model))
    msg = str(err.value)
    assert "\n" not in msg and "challenger J&F" in msg and "0..100" in msg and repr(jf) in msg
    assert not reg_dir.exists()  # nothing written, not even a lock


@pytest.mark.parametrize("jf", [math.nan, 101.0, -0.5])
def test_bad_champion_jf_is_refused(jf: float, model: str, tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    reg.promote(_rec(40.0, "first", model))
    with pytest.raises(RegistryInputError, match=r"^champion J&F .* 0\.\.100$"):
        reg.promote(_rec(50.0, "second", model), champion_jf=jf)
    assert [e["event"] for e in reg.history()] == ["promoted"]


@pytest.mark.parametrize("margin", [math.nan, -1.0, math.inf])
def test_bad_margin_is_refused(margin: float, model: str, tmp_path: Path) -> None:
    with pytest.raises(RegistryInputError, match="margin"):
        Registry(str(tmp_path / "reg")).promote(_rec(40.0, "r", model), margin=margin)


def test_missing_model_is_refused(tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    missing = str(tmp_path / "run7" / "model_final.pt")
    with pytest.raises(RegistryInputError) as err:
        Registry(str(reg_dir)).promote(_rec(40.0, "r", missing))
    assert "\n" not in str(err.value) and missing in str(err.value)
    assert not reg_dir.exists()
    with pytest.raises(RegistryInputError, match="empty"):
        Registry(str(reg_dir)).promote(_rec(40.0, "r", ""))


def test_exit_statuses(model: str, tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "reg"))
    first = reg.promote(_rec(40.0, "a", model))
    assert first.outcome == PROMOTED and first.exit_status == EXIT_STATUS[PROMOTED] == 0
    kept = reg.promote(_rec(39.0, "b", model))
    assert kept.outcome == KEPT and kept.exit_status == EXIT_STATUS[KEPT] != 0
    assert kept.previous_event_id == first.event_id == "promotion-000001"
    assert not (tmp_path / "reg" / LOCK_FILE).exists()


# ------------------------------------------------------------------------------ lease lock
def _lock_record(*, expires: float, pid: int = 999999) -> str:
    return json.dumps({"token": "dead", "pid": pid, "host": "gone", "expires": expires})


def test_expired_lock_is_broken(model: str, tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    reg_dir.mkdir()
    (reg_dir / LOCK_FILE).write_text(_lock_record(expires=time.time() - 1))
    start = time.monotonic()
    assert Registry(str(reg_dir)).promote(_rec(40.0, "a", model), wait_s=5).promote
    assert time.monotonic() - start < 2
    assert not (reg_dir / LOCK_FILE).exists()
    assert [n for n in _files(reg_dir) if ".rm-" in n or ".tmp-" in n] == []


def test_unreadable_old_lock_is_broken(model: str, tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    reg_dir.mkdir()
    lock = reg_dir / LOCK_FILE
    lock.write_bytes(b"")  # a holder that died between O_EXCL and writing its record
    old = time.time() - storage.DEFAULT_LEASE_S - 5
    os.utime(lock, (old, old))
    assert Registry(str(reg_dir)).promote(_rec(40.0, "a", model), wait_s=5).promote


def test_live_lock_makes_a_clear_error(model: str, tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    reg_dir.mkdir()
    held = _lock_record(expires=time.time() + 600, pid=4242)
    (reg_dir / LOCK_FILE).write_text(held)
    with pytest.raises(PromotionRaceLost) as err:
        Registry(str(reg_dir)).promote(_rec(40.0, "a", model), wait_s=0.3)
    msg = str(err.value)
    assert "\n" not in msg and "pid 4242" in msg and LOCK_FILE in msg
    assert (reg_dir / LOCK_FILE).read_text() == held  # the holder's lock is left alone
    assert not (reg_dir / "history").exists()


def _hold_lock(url: str, ready: Event) -> None:
    with storage.lease_lock(url, lease_s=1.0):
        ready.set()
        time.sleep(600)


def test_lock_of_a_killed_holder_expires(model: str, tmp_path: Path) -> None:
    """SIGKILL inside the lock: the next promotion waits out the lease, then proceeds."""
    reg_dir = tmp_path / "reg"
    reg_dir.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(reg_dir / LOCK_FILE), ready))
    holder.start()
    assert ready.wait(30)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert (reg_dir / LOCK_FILE).exists()
    start = time.monotonic()
    assert Registry(str(reg_dir)).promote(_rec(40.0, "a", model), wait_s=30).promote
    assert time.monotonic() - start < 10
    assert not (reg_dir / LOCK_FILE).exists()


def test_lock_needs_a_local_path() -> None:
    lock = storage.lease_lock("memory://registry/champion.lock")
    with pytest.raises(ValueError, match="local or PVC"):
        lock.__enter__()


# ------------------------------------------------------------------ crashes and old layouts
def test_killed_before_the_pointer_moved(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promotion event written, champion.json not: the chain still names the champion."""
    reg = Registry(str(tmp_path / "reg"))
    reg.promote(_rec(40.0, "a", model))

    def die(self: Registry, tip: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(Registry, "_publish", die)
        with pytest.raises(KeyboardInterrupt):
            reg.promote(_rec(45.0, "b", model))
    pointer = json.loads((tmp_path / "reg" / "champion.json").read_text())
    assert pointer["champion"]["run_id"] == "a"
    assert reg.champion().run_id == "b"  # type: ignore[union-attr]
    # The next promotion compares with b and builds on it; the pointer catches up.
    assert not reg.promote(_rec(45.2, "c", model), margin=0.5).promote
    assert reg.promote(_rec(46.0, "d", model), margin=0.5).promote
    assert [e["run_id"] for e in reg.chain()] == ["a", "b", "d"]
    pointer = json.loads((tmp_path / "reg" / "champion.json").read_text())
    assert pointer["champion"]["run_id"] == "d" and pointer["seq"] == 3


def test_registry_of_an_older_version(model: str, tmp_path: Path) -> None:
    """champion.json without promotion numbers: the chain starts after it."""
    reg_dir = tmp_path / "reg"
    (reg_dir / "history").mkdir(parents=True)
    legacy = _rec(30.0, "old", model).to_dict()
    (reg_dir / "champion.json").write_text(
        json.dumps({"champion": legacy, "previous": None, "since": "2026-01-01T00:00:00Z"})
    )
    reg = Registry(str(reg_dir))
    assert reg.champion().run_id == "old"  # type: ignore[union-attr]
    assert reg.promote(_rec(31.0, "new", model)).promote
    (event,) = reg.chain()
    assert event["previous_event_id"] is None and event["previous_champion"]["run_id"] == "old"


def test_nan_champion_of_an_older_version(model: str, tmp_path: Path) -> None:
    reg_dir = tmp_path / "reg"
    reg_dir.mkdir()
    poisoned = {**_rec(30.0, "old", model).to_dict(), "jf": math.nan}
    (reg_dir / "champion.json").write_text(json.dumps({"champion": poisoned}))
    reg = Registry(str(reg_dir))
    with pytest.raises(RegistryError) as err:
        reg.promote(_rec(31.0, "new", model))
    assert "\n" not in str(err.value) and "champion.json" in str(err.value)
    assert "--champion-jf" in str(err.value)
    # Re-measured, the comparison is possible again.
    assert reg.promote(_rec(31.0, "new", model), champion_jf=29.0).promote


def test_champion_changed_to_another_split(model: str, tmp_path: Path) -> None:
    """The J&F was re-measured for a champion that is no longer champion: one line, no event."""
    reg = Registry(str(tmp_path / "reg"))
    reg.promote(_rec(40.0, "a", model, version="v2"))
    with pytest.raises(PromotionRaceLost) as err:
        reg.promote(
            _rec(50.0, "b", model, version="v3"),
            champion_jf=45.0,
            champion_model_uri=str(tmp_path / "another.pt"),
        )
    assert "\n" not in str(err.value) and "changed" in str(err.value)
    assert len(reg.history()) == 1


def test_always_losing_gives_up(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(str(tmp_path / "reg"))
    monkeypatch.setattr(storage, "create_exclusive", lambda url, data: False)
    with pytest.raises(PromotionRaceLost, match="lost 3 promotion races"):
        reg.promote(_rec(40.0, "a", model), attempts=3)
    assert reg.history() == [] and reg.champion() is None


def test_lost_race_is_decided_again_on_the_stored_jf(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-measured champion J&F belongs to the champion it was measured on, not to a model
    that won a race meanwhile: the second decision uses the winner's stored J&F."""
    reg = Registry(str(tmp_path / "reg"))
    reg.promote(_rec(40.0, "a", model))
    real_create = storage.create_exclusive
    calls = []

    def rival_first(url: str, data: bytes) -> bool:
        if not calls:  # the rival (J&F 60 on the same split) creates promotion 2 first
            rival = {**json.loads(data), "run_id": "rival", "writer": "rival"}
            rival["challenger"] = {**rival["challenger"], "jf": 60.0, "run_id": "rival"}
            assert real_create(url, json.dumps(rival).encode())
        calls.append(url)
        return real_create(url, data)

    monkeypatch.setattr(storage, "create_exclusive", rival_first)
    # Against a (re-measured) 41 the challenger's 50 would win; against the rival's 60 not.
    decision = reg.promote(_rec(50.0, "b", model), champion_jf=41.0, margin=0.5)
    assert not decision.promote and decision.attempts == 2 and decision.champion_jf == 60.0
    assert [e["run_id"] for e in reg.chain()] == ["a", "rival"]
