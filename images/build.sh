#!/usr/bin/env bash
# Build both project images from this checkout, tag them, and optionally push them:
#   <repository>:<tag>-data   CPU: data steps, KFP launcher step, CronJob, CPU training (dev)
#   <repository>:<tag>-train  CUDA: training pods and GPU evaluation
# The tag defaults to the package version (sam2_core.__version__), the repository to the
# project's; any commit builds (no git tag needed). Then point the pipeline and the manifests
# at the same names: `sam2kf compile --image-repo <repository> --image-tag <tag>` (or
# SAM2KF_IMAGE_REPO / SAM2KF_IMAGE_TAG) and `kustomize edit set image` (README).
#
# usage: images/build.sh [--repo REPOSITORY] [--tag TAG] [--only data|train] [--push] [--dry-run]
#   e.g. images/build.sh --repo registry.example.com/team/sam2-kubeflow --push
# env:   SAM2KF_IMAGE_REPO, SAM2KF_IMAGE_TAG (defaults of --repo/--tag), DOCKER (default docker;
#        `podman` works too)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init="$root/sam2_core/__init__.py"
# Read from the source, so that no Python environment is needed to build.
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$init")
default_repo=$(sed -n 's/^IMAGE_REPOSITORY = "\(.*\)"$/\1/p' "$init")
if [[ -z "$version" || -z "$default_repo" ]]; then
  echo "build.sh: cannot read __version__ / IMAGE_REPOSITORY from $init" >&2
  exit 2
fi

repo=${SAM2KF_IMAGE_REPO:-$default_repo}
tag=${SAM2KF_IMAGE_TAG:-$version}
flavours=(data train)
push=0
dry=0
docker=${DOCKER:-docker}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --repo) repo=${2:?--repo needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --only)
      case "${2:-}" in
        data|train) flavours=("$2") ;;
        *) echo "build.sh: --only ${2:-}: expected data or train" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --push) push=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ "$repo" == *@* || "${repo##*/}" == *:* ]]; then
  echo "build.sh: --repo $repo: give the repository without a tag (the tag is --tag)" >&2
  exit 2
fi
if [[ -z "$tag" || "$tag" == latest || "$tag" == *[:@/\ ]* ]]; then
  echo "build.sh: --tag '$tag': give a fixed tag, e.g. $version" >&2
  exit 2
fi

revision=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
run() {
  echo "+ $*"
  if [[ $dry -eq 0 ]]; then "$@"; fi
}
for flavour in "${flavours[@]}"; do
  run "$docker" build -f "$root/images/$flavour.Dockerfile" --build-arg "VERSION=$version" \
    --label "org.opencontainers.image.revision=$revision" -t "$repo:$tag-$flavour" "$root"
done
if [[ $push -eq 1 ]]; then
  for flavour in "${flavours[@]}"; do
    run "$docker" push "$repo:$tag-$flavour"
  done
fi
echo "images: ${flavours[*]/#/$repo:$tag-}"
if [[ "$repo" != "$default_repo" || "$tag" != "$version" ]]; then
  echo "use them: sam2kf compile --image-repo $repo --image-tag $tag ..."
fi
