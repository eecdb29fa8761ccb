"""The ``sam2kf`` entry point lists every subcommand and each has ``--help``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sam2_core import __version__
from sam2_core.cli import COMMANDS, main

SUBCOMMANDS = [name for name, _, _ in COMMANDS]


def test_expected_subcommands() -> None:
    expected = {
        "extract",
        "shard",
        "train",
        "evaluate",
        "promote",
        "export",
        "demo-data",
        "run",
        "compile",
        "submit",
        "schedule",
    }
    assert expected <= set(SUBCOMMANDS)


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: sam2kf" in capsys.readouterr().out


def test_console_script_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sam2_core.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert __version__ in out.stdout
