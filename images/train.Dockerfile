# syntax=docker/dockerfile:1.7
# CUDA training image: torch 2.13.0 (CUDA 13.0, cuDNN 9) from the official PyTorch runtime image,
# plus the sam2-kubeflow wheel built from this checkout. Runs PyTorchJob replicas and TorchX roles
# (`torchrun --no-python sam2kf train ...`); also evaluation on GPU nodes.
# Build from the repository root of any checkout (no git tag needed); VERSION must be the
# package version (sam2_core.__version__), which images/build.sh reads and passes for you:
#   images/build.sh --only train [--repo REPOSITORY] [--tag TAG] [--push]
# or by hand, for the default names:
#   docker build -f images/train.Dockerfile --build-arg VERSION=0.1.0 \
#       -t ghcr.io/sam2-kubeflow/sam2-kubeflow:0.1.0-train .
#   docker push ghcr.io/sam2-kubeflow/sam2-kubeflow:0.1.0-train
# Check:  docker run --rm ghcr.io/sam2-kubeflow/sam2-kubeflow:0.1.0-train --version

ARG VERSION=0.1.0

# ---- stage 1: build the wheel (build tools live and die here) ---------------------------------
FROM python:3.11.14-slim-bookworm AS wheel
ARG VERSION
WORKDIR /src
RUN python -m pip install --no-cache-dir "build==1.6.1"
COPY pyproject.toml README.md ./
COPY sam2_core ./sam2_core
COPY components ./components
COPY pipelines ./pipelines
RUN python -m build --wheel --outdir /dist . \
 && test -f "/dist/sam2_kubeflow-${VERSION}-py3-none-any.whl" \
 || { echo "package version is not ${VERSION}: pass --build-arg VERSION=<sam2_core.__version__> (images/build.sh does)" >&2; exit 1; }

# ---- stage 2: runtime ---------------------------------------------------------------------------
FROM pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime AS runtime
ARG VERSION
LABEL org.opencontainers.image.title="sam2-kubeflow (CUDA training)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/sam2-kubeflow/sam2-kubeflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="SAM 2.1 fine-tuning: sam2kf CLI, torchrun, torch 2.13.0 CUDA"
# torch is already in the base image: the constraint keeps pip from replacing it, and
# --only-binary keeps compilers out of this stage (nothing is built here).
COPY --from=wheel /dist/ /tmp/dist/
RUN echo "torch==2.13.0" > /tmp/constraints.txt \
 && python -m pip install --no-cache-dir --only-binary=:all: -c /tmp/constraints.txt \
        "/tmp/dist/sam2_kubeflow-${VERSION}-py3-none-any.whl" \
 && rm -rf /tmp/dist /tmp/constraints.txt \
 && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
 && sam2kf --version && torchrun --help > /dev/null \
 && groupadd --gid 1000 sam2 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp sam2
# Read-only root filesystem in the cluster: everything writable is an emptyDir (/tmp, /cache).
ENV HOME=/tmp \
    XDG_CACHE_HOME=/cache \
    TORCH_HOME=/cache/torch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 1000:1000
ENTRYPOINT ["sam2kf"]
CMD ["--help"]
