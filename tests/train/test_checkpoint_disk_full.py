"""Checkpoint writes on a full disk: one clear error, no temporary folders left, orphans swept."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sam2_core.train import checkpoint as ck
from sam2_core.train.checkpoint import CheckpointDiskFullError, CheckpointManager


def _state(step: int) -> dict[str, Any]:
    return {"step": step, "model": {"w": torch.full((1000,), float(step))}}


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _fsync_enospc(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_enospc_while_writing_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ckpt"
    mgr = CheckpointManager(str(root), keep_last=2)
    mgr.save(1, _state(1))
    monkeypatch.setattr(ck.os, "fsync", _fsync_enospc)
    for _retry in range(3):  # a crash-looping job retrying the same write
        with pytest.raises(CheckpointDiskFullError) as info:
            mgr.save(2, _state(2))
        msg = str(info.value)
        assert "\n" not in msg
        assert msg.startswith(f"{root}: no space left for checkpoint step-000002")
        assert "MiB" in msg and "needs" in msg
        assert info.value.errno == errno.ENOSPC
        assert _entries(root) == ["step-000001"]  # no .tmp-* left behind
    monkeypatch.undo()
    step, state = mgr.load_latest()  # type: ignore[misc]
    assert step == 1 and state["model"]["w"][0] == 1.0


def test_enospc_on_best_keeps_the_old_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ckpt"
    mgr = CheckpointManager(str(root))
    mgr.save_best(1, _state(1), {"J&F": 10.0})
    monkeypatch.setattr(ck.os, "fsync", _fsync_enospc)
    with pytest.raises(CheckpointDiskFullError, match="checkpoint best"):
        mgr.save_best(2, _state(2), {"J&F": 20.0})
    monkeypatch.undo()
    assert _entries(root) == ["best"]
    assert ck.load_state(str(root / "best"))["step"] == 1


def test_too_little_free_space_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ckpt"
    root.mkdir()
    real = shutil.disk_usage

    def tiny(path: Any) -> Any:
        return real(path)._replace(free=1000)

    monkeypatch.setattr(ck.shutil, "disk_usage", tiny)
    with pytest.raises(CheckpointDiskFullError) as info:
        CheckpointManager(str(root)).save(3, _state(3))
    assert "0.0 MiB free" in str(info.value)
    assert _entries(root) == []


def test_other_write_errors_also_clean_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    root = tmp_path / "ckpt"
    monkeypatch.setattr(ck.os, "fsync", eio)
    with pytest.raises(OSError, match="I/O error") as info:
        CheckpointManager(str(root)).save(1, _state(1))
    assert not isinstance(info.value, CheckpointDiskFullError)
    assert _entries(root) == []


def test_orphaned_tmp_folders_are_swept_before_the_first_write(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    for name in (".tmp-step-000004-0badc0de", ".tmp-best-12345678-old"):
        (root / name).mkdir(parents=True)
        (root / name / "state.pt").write_bytes(os.urandom(64))
    mgr = CheckpointManager(str(root))
    assert sorted(mgr.sweep_orphans()) == [".tmp-best-12345678-old", ".tmp-step-000004-0badc0de"]
    (root / ".tmp-step-000005-deadbeef").mkdir()
    mgr2 = CheckpointManager(str(root))
    mgr2.save_best(5, _state(5), {"J&F": 1.0})  # swept on the first write, not only after prune
    assert _entries(root) == ["best"]


_SMALL_FS_SCRIPT = """
import shutil, sys, torch
from pathlib import Path
from sam2_core.train import checkpoint as ck
root = Path(sys.argv[1]) / "ckpt"
big = {"model": {"w": torch.zeros(1 << 20)}}  # 4 MiB on a 1 MiB filesystem
for precheck in (True, False):
    if not precheck:
        ck._free_bytes = lambda folder: None  # let the write itself hit ENOSPC
    try:
        ck.CheckpointManager(str(root)).save(1, big)
    except ck.CheckpointDiskFullError as exc:
        print("ERR", exc)
    leftovers = sorted(p.name for p in root.iterdir())
    print("LEFT", leftovers)
"""


def test_real_enospc_on_a_small_tmpfs(tmp_path: Path) -> None:
    """A real full filesystem: a 1 MiB tmpfs in a user + mount namespace (skips without one)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare")
    mnt = tmp_path / "small"
    mnt.mkdir()
    probe = subprocess.run(
        [unshare, "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    cmd = f'mount -t tmpfs -o size=1m tmpfs {mnt} && "{sys.executable}" -c "$SCRIPT" {mnt}'
    env = {**os.environ, "SCRIPT": _SMALL_FS_SCRIPT}
    res = subprocess.run(
        [unshare, "-rm", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    errs = [ln for ln in lines if ln.startswith("ERR ")]
    assert len(errs) == 2, res.stdout
    for e in errs:
        assert f"{mnt}/ckpt: no space left for checkpoint step-000001: it needs 4.0 MiB" in e
    assert lines.count("LEFT []") == 2  # neither the checked nor the failed write left anything
