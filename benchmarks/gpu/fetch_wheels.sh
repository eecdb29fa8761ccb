#!/usr/bin/env bash
# Prepares what the GPU validation kit carries to a machine without registry access (run it
# here, once, from the repository root; keep the folder out of git, e.g. .git/info/exclude):
#
#   bash benchmarks/gpu/fetch_wheels.sh [DIR]      (default DIR: .whl)
#
# The GPU machine has torch, numpy, pyarrow, pillow, PyYAML, pytest, tqdm, portalocker and
# cloudpickle but not: hydra-core, omegaconf and antlr4 (our model configs and Meta's), iopath,
# tensordict and pyvers (Meta's training package). All are pure Python (py3-none-any), so the
# wheels fit any Python 3 there; the two published only as sdists (antlr4 4.9.3, iopath) are
# built into wheels here. The versions are those of the reference environment
# (benchmarks/reference/setup_env.sh). Plus sam2 1.1.0's sdist (Meta's code, unpacked there by
# run.sh). About 1 MB in all; a device run may carry 64 MiB.
set -euo pipefail
DIR="${1:-.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
# The folder must stay out of git (a device run sends tracked and untracked-not-ignored files):
if ! git check-ignore -q "$DIR/x.whl"; then
  echo "note: $DIR is not ignored by git; add it: echo '/$DIR/' >> \"\$(git rev-parse --git-path info/exclude)\"" >&2
fi
"$PY" -m pip wheel -q --no-deps -w "$DIR" \
  "hydra-core==1.3.8" "omegaconf==2.3.1" "antlr4-python3-runtime==4.9.3" \
  "iopath==0.1.10" "tensordict==0.15.3" "pyvers==0.2.3"
# sam2 1.1.0's sdist: the reference environment's copy, else from the registry (its metadata
# step imports torch, hence no build isolation, as in setup_env.sh).
if [ -f .venv-ref/src/sam2-1.1.0.tar.gz ]; then
  cp .venv-ref/src/sam2-1.1.0.tar.gz "$DIR/"
else
  SAM2_BUILD_CUDA=0 "$PY" -m pip download -q --no-deps --no-build-isolation -d "$DIR" "sam2==1.1.0"
fi
ls -la "$DIR"
du -sh "$DIR"
