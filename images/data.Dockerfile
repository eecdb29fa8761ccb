# syntax=docker/dockerfile:1.7
# Slim CPU image: data steps (extract, shard), the retraining CronJob and the KFP launcher step,
# evaluation on CPU, and CPU training of the tiny model (dev overlay). torch 2.13.0 CPU build.
# Build from the repository root of any checkout (no git tag needed); VERSION must be the
# package version (sam2_core.__version__), which images/build.sh reads and passes for you:
#   images/build.sh --only data [--repo REPOSITORY] [--tag TAG] [--push]
# or by hand, for the default names:
#   docker build -f images/data.Dockerfile --build-arg VERSION=0.1.0 \
#       -t ghcr.io/sam2-kubeflow/sam2-kubeflow:0.1.0-data .
#   docker push ghcr.io/sam2-kubeflow/sam2-kubeflow:0.1.0-data
# Check:  docker run --rm ghcr.io/sam2-kubeflow/sam2-kubeflow:0.1.0-data --version

ARG VERSION=0.1.0

# ---- stage 1: build the wheel and collect every dependency as a wheel ---------------------------
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
# CPU torch first from the PyTorch CPU index (the default index would pull the CUDA build).
RUN python -m pip download --no-cache-dir --only-binary=:all: --dest /wheels \
        --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && python -m pip download --no-cache-dir --only-binary=:all: --dest /wheels \
        --find-links /wheels "/dist/sam2_kubeflow-${VERSION}-py3-none-any.whl" "torch==2.13.0" \
 && cp /dist/*.whl /wheels/

# ---- stage 2: runtime (no compilers, no pip cache, no build frontend) ---------------------------
FROM python:3.11.14-slim-bookworm AS runtime
ARG VERSION
LABEL org.opencontainers.image.title="sam2-kubeflow (CPU data and launcher)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/sam2-kubeflow/sam2-kubeflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="SAM 2.1 data steps and launcher: sam2kf CLI, torchrun, torch 2.13.0 CPU"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links /wheels \
        "sam2-kubeflow==${VERSION}" "torch==2.13.0" \
 && sam2kf --version && torchrun --help > /dev/null \
 && groupadd --gid 1000 sam2 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp sam2
ENV HOME=/tmp \
    XDG_CACHE_HOME=/cache \
    TORCH_HOME=/cache/torch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 1000:1000
ENTRYPOINT ["sam2kf"]
CMD ["--help"]
