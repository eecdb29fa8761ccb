#!/usr/bin/env bash
# GPU validation kit (issue 18, item 3): one run, under 8 minutes on one H200.
#
#   bash benchmarks/gpu/run.sh [--cpu] [kit.py options]
#
# On the GPU machine (see benchmarks/gpu/README.md): carry the folder made by
# benchmarks/gpu/fetch_wheels.sh (default .whl; WHL=DIR to change); the results land in
# $OUT/gpu_kit.json and the log in $OUT/gpu_kit.log ($OUT defaults to /tmp/gpu_kit_out).
# --cpu: the dry run with tiny sizes on CPU (a couple of minutes); here Meta's cases use the
# reference environment: add --meta-python .venv-ref/bin/python (its sam2 source is found
# automatically when the wheel folder holds no sdist).
set -uo pipefail
cd "$(dirname "$0")/../.."
WHL="${WHL:-.whl}"
OUTDIR="${OUT:-/tmp/gpu_kit_out}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
if compgen -G "$WHL/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/sam2kf-site "$WHL"/*.whl || exit 1
  export PYTHONPATH="/tmp/sam2kf-site${PYTHONPATH:+:$PYTHONPATH}"
fi
SRC="${SAM2_SRC:-}"
if [ -z "$SRC" ] && compgen -G "$WHL/sam2-1.1.0.tar.gz" >/dev/null; then
  mkdir -p /tmp/sam2kf-sam2 && tar xzf "$WHL/sam2-1.1.0.tar.gz" -C /tmp/sam2kf-sam2
  SRC=/tmp/sam2kf-sam2/sam2-1.1.0
fi
[ -z "$SRC" ] && [ -d .venv-ref/src/sam2-1.1.0 ] && SRC=.venv-ref/src/sam2-1.1.0
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# 470 s: the kit stops starting cases after 450 s; this is the hard stop under 8 minutes
timeout 470 "$PY" benchmarks/gpu/kit.py --out "$OUTDIR/gpu_kit.json" --sam2-src "$SRC" "$@" \
  2>&1 | tee "$OUTDIR/gpu_kit.log"
rc=${PIPESTATUS[0]}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >> "$OUTDIR/gpu_kit.log"
exit "$rc"
