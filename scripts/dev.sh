#!/usr/bin/env bash
# Set-up and entry points used by the README's two commands (and by CI).
#   bash scripts/dev.sh demo   -> venv + package, then the whole pipeline locally on demo data
#   bash scripts/dev.sh test   -> venv + package with test extras, then lint + type check + tests
# torch==2.13.0 is installed first on purpose: an unpinned `torch` would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
mode=${1:-}
[ -n "$mode" ] || { echo "usage: bash scripts/dev.sh demo|test [extra args]" >&2; exit 2; }
shift || true

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip >/dev/null
pip install "torch==2.13.0"

case "$mode" in
  demo)
    pip install -e .
    "$VENV/bin/python" -m pip check
    exec "$VENV/bin/sam2kf" run --local "$@"
    ;;
  test)
    pip install -e ".[dev,torchx]"
    "$VENV/bin/python" -m pip check
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "unknown mode: $mode (demo|test)" >&2; exit 2 ;;
esac
