"""Registry: champion record, append-only history, promotion gate and seen videos."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sam2_core.cli import main
from sam2_core.registry import EXIT_STATUS, KEPT, ModelRecord, Registry, RegistryError, decide


def _rec(jf: float, run: str, *, version: str = "v1", uri: str = "") -> ModelRecord:
    return ModelRecord(
        model_uri=uri or _model(run),
        jf=jf,
        dataset_name="demo",
        dataset_version=version,
        run_id=run,
    )


_MODELS: list[Path] = []


def _model(run: str) -> str:
    """A model file that exists (promotion refuses URIs that do not)."""
    path = _MODELS[-1] / f"{run}.pt"
    path.write_bytes(b"weights")
    return str(path)


@pytest.fixture(autouse=True)
def _model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _MODELS.append(tmp_path_factory.mktemp("models"))
    yield
    _MODELS.pop()


def test_decide_margin() -> None:
    assert decide(challenger_jf=50.0, champion_jf=None, margin=1.0).promote
    assert decide(challenger_jf=51.0, champion_jf=50.0, margin=1.0).promote
    assert not decide(challenger_jf=50.5, champion_jf=50.0, margin=1.0).promote


def _exercise(url: str) -> None:
    reg = Registry(url)
    assert reg.champion() is None
    first = reg.promote(_rec(40.0, "run1"), margin=1.0)
    assert first.promote and "first" in first.reason
    assert reg.champion().run_id == "run1"  # type: ignore[union-attr]
    # Not good enough by the margin: the champion stays, the attempt is still recorded.
    assert not reg.promote(_rec(40.5, "run2"), margin=1.0, champion_jf=40.0).promote
    assert reg.champion().run_id == "run1"  # type: ignore[union-attr]
    # On a new split the champion must be re-measured: stored J&F is not comparable.
    with pytest.raises(RegistryError, match="same split"):
        reg.promote(_rec(90.0, "run3", version="v2"), margin=1.0)
    # Re-measured on v2 the champion scores 30; the challenger wins.
    assert reg.promote(_rec(35.0, "run3", version="v2"), margin=1.0, champion_jf=30.0).promote
    champ = reg.champion()
    assert champ is not None and champ.run_id == "run3" and champ.dataset_version == "v2"
    hist = reg.history()
    assert [h["event"] for h in hist] == ["promoted", "rejected", "promoted"]
    # The previous champion is never lost: it is in the last event and in champion.json.
    assert hist[-1]["previous_champion"]["run_id"] == "run1"


def test_registry_local(tmp_path: Path) -> None:
    _exercise(str(tmp_path / "reg"))


def test_registry_no_temp_leftovers(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path))
    reg.promote(_rec(1.0, "a"))
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_corrupt_champion_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "champion.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"champion\.json"):
        Registry(str(tmp_path)).champion()


def test_seen_videos(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path))
    reg.record_dataset_version(dataset_name="sav", dataset_version="v1", video_ids=["a", "b"])
    reg.record_dataset_version(dataset_name="sav", dataset_version="v2", video_ids=["c"])
    assert reg.seen_videos("sav") == {"a", "b", "c"}
    # A retry of v2 must see its own videos as not yet done.
    assert reg.seen_videos("sav", exclude_version="v2") == {"a", "b"}
    assert reg.seen_videos("other") == set()


@pytest.fixture(scope="module")
def gcs_bucket() -> Iterator[str]:
    server_mod = pytest.importorskip("gcp_storage_emulator.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.create_server(
        "127.0.0.1", port, in_memory=True, default_bucket="reg-bucket"
    )
    server.start()
    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        yield "gs://reg-bucket/registry"
    finally:
        mp.undo()
        server.stop()


def test_registry_on_gcs_emulator(gcs_bucket: str) -> None:
    _exercise(gcs_bucket)


def test_promote_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"J&F": 42.0, "J": 40.0, "F": 44.0}))
    reg = str(tmp_path / "reg")
    split = ["--dataset-name", "demo", "--dataset-version", "v1", "--split", "val"]
    rc = main(
        [
            "promote",
            "--registry",
            reg,
            "--model-uri",
            _model("m"),
            "--summary",
            str(summary),
            "--run-id",
            "r1",
            *split,
        ]
    )
    assert rc == 0 and "PROMOTED" in capsys.readouterr().out
    rc = main(
        [
            "promote",
            "--registry",
            reg,
            "--model-uri",
            _model("n"),
            "--jf",
            "42.1",
            "--margin",
            "1",
            "--run-id",
            "r2",
            *split,
        ]
    )
    # A kept champion is exit status 3 (Decision.exit_status).
    assert rc == EXIT_STATUS[KEPT] and "kept champion" in capsys.readouterr().out
    assert main(["promote", "--registry", reg, "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["champion"]["run_id"] == "r1" and shown["champion"]["metrics"]["J"] == 40.0
