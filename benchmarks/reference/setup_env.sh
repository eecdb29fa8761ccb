#!/usr/bin/env bash
# Builds the environment that runs Meta's own SAM 2 training code (sam2 1.1.0 from PyPI) as the
# baseline of benchmarks/train_step.py --reference, on this machine, next to ours.
#
#   bash benchmarks/reference/setup_env.sh [DIR]     (default DIR: .venv-ref)
#
# Everything comes from the package registry: torch 2.13.0 (CPU) first so nothing resolves a
# CUDA build, then the pure-Python dependencies of sam2's training modules, then the sam2 1.1.0
# source distribution, unpacked next to the venv and imported from there (its optional CUDA
# extension is never built; SAM2Train, the losses and the model need none of it, nor
# torchvision).
set -euo pipefail
DIR="${1:-.venv-ref}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv "$DIR"
"$DIR/bin/pip" install -q --upgrade pip
"$DIR/bin/pip" install -q "torch==2.13.0"
"$DIR/bin/pip" install -q "numpy<3" "hydra-core>=1.3.2" "iopath>=0.1.10" "pillow>=9.4.0" \
  "tqdm>=4.66.1" "tensordict==0.15.3" tensorboard "torch==2.13.0"
# fvcore: the lr/weight-decay schedulers of the official optimizer (training.optimizer's
# construct_optimizer, used by benchmarks/trajectory.py); the version Meta's trainer was run with.
"$DIR/bin/pip" install -q "fvcore==0.1.5.post20221221" "torch==2.13.0"
mkdir -p "$DIR/src"
# sam2 1.1.0 is only published as an sdist whose build needs torch: prepare its metadata with
# the torch installed above (no isolated build env, which would look for torch on its own).
"$DIR/bin/pip" install -q setuptools wheel
SAM2_BUILD_CUDA=0 "$DIR/bin/pip" download -q --no-deps --no-build-isolation "sam2==1.1.0" -d "$DIR/src"
tar xzf "$DIR/src"/sam2-1.1.0.tar.gz -C "$DIR/src"
"$DIR/bin/pip" check
"$DIR/bin/python" - <<'PY'
import torch
print("torch", torch.__version__)
PY
echo "reference environment ready: $DIR (sam2 source: $DIR/src/sam2-1.1.0)"
