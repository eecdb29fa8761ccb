"""Running one of Meta's side scripts (``benchmarks/reference/*.py``) in the reference environment
made by ``benchmarks/reference/setup_env.sh``: its python, sam2 1.1.0's sources on PYTHONPATH.

Imported by the scripts of this folder (``train_step.py``, ``trajectory.py``; their own folder
is ``sys.path[0]``).
"""

from __future__ import annotations

import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def run_reference_script(
    venv: str, script: str, args: list[str], *, timeout: float
) -> subprocess.CompletedProcess[str] | str:
    """``benchmarks/reference/<script> <args...>`` with ``venv``'s python, its output captured;
    instead, the reason as one line when ``venv`` is not a reference environment."""
    py = os.path.join(venv, "bin", "python")
    src = os.path.join(venv, "src", "sam2-1.1.0")
    if not (os.path.exists(py) and os.path.isdir(src)):
        return f"{venv} is not a reference environment (run setup_env.sh)"
    return subprocess.run(
        [py, os.path.join(HERE, "reference", script), *args],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
