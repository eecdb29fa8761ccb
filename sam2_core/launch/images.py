"""Which container images the pipeline steps and the training pods run: one setting.

The project builds two images from one repository, told apart by the tag's suffix
(``images/build.sh``): ``<repository>:<tag>-data`` (CPU: data steps, launcher, CronJob) and
``<repository>:<tag>-train`` (CUDA: training and GPU evaluation). :class:`ImageSettings` names the
repository and the tag once; every KFP step's base image and the training pods' image follow it.
Defaults: ``ghcr.io/sam2-kubeflow/sam2-kubeflow`` and this package's version, i.e. the images a
release publishes. ``sam2kf compile|submit|schedule --image-repo/--image-tag`` set it, or the
environment variables :data:`IMAGE_REPO_ENV` and :data:`IMAGE_TAG_ENV`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sam2_core import IMAGE_REPOSITORY, __version__

#: Environment variables read by :meth:`ImageSettings.from_env` (flags win over them).
IMAGE_REPO_ENV = "SAM2KF_IMAGE_REPO"
IMAGE_TAG_ENV = "SAM2KF_IMAGE_TAG"
#: The two images of a build: CPU data/launcher image and CUDA training image.
FLAVOURS = ("data", "train")


@dataclass(frozen=True)
class ImageSettings:
    """Repository and tag of the project's images (defaults: the released, versioned names)."""

    repository: str = IMAGE_REPOSITORY
    tag: str = __version__

    @classmethod
    def from_env(
        cls, *, repository: str = "", tag: str = "", env: Mapping[str, str] | None = None
    ) -> ImageSettings:
        """Settings from explicit values, else ``$SAM2KF_IMAGE_REPO``/``$SAM2KF_IMAGE_TAG``,
        else the defaults. Raises ValueError naming the bad value."""
        env = os.environ if env is None else env
        repo = (repository or env.get(IMAGE_REPO_ENV, "") or IMAGE_REPOSITORY).strip()
        version = (tag or env.get(IMAGE_TAG_ENV, "") or __version__).strip()
        if ":" in repo.rsplit("/", 1)[-1] or "@" in repo or any(c.isspace() for c in repo):
            raise ValueError(
                f"image repository {repo!r}: give the repository without a tag or digest, "
                "e.g. registry.example.com/team/sam2-kubeflow (the tag is --image-tag)"
            )
        if not version or any(c in version for c in ":@/ ") or version == "latest":
            raise ValueError(
                f"image tag {version!r}: give a fixed tag such as {__version__} (the image "
                "names become <repository>:<tag>-data and <repository>:<tag>-train)"
            )
        return cls(repository=repo, tag=version)

    @property
    def is_default(self) -> bool:
        return self == ImageSettings()

    def ref(self, flavour: str) -> str:
        """``<repository>:<tag>-<flavour>``, e.g. ``registry.example.com/sam2kf:0.1.0-train``."""
        if flavour not in FLAVOURS:
            raise ValueError(f"image flavour {flavour!r}: expected one of {FLAVOURS}")
        return f"{self.repository}:{self.tag}-{flavour}"

    def retarget(self, image: str) -> str:
        """The same flavour of ``image`` (a default project image) in these settings; any other
        image (a user's own, e.g. ``--train-image``) is returned unchanged."""
        for flavour in FLAVOURS:
            if image == ImageSettings().ref(flavour):
                return self.ref(flavour)
        return image
