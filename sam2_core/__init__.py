"""sam2-kubeflow core library: SAM 2.1 model, data, training, evaluation and cluster helpers."""

__version__ = "0.1.0"

#: Container image that every component, manifest and TorchX app uses; tagged with the version.
IMAGE_REPOSITORY = "ghcr.io/sam2-kubeflow/sam2-kubeflow"


def image_ref(*, flavour: str = "train") -> str:
    """Return the version-tagged image reference, e.g. ``ghcr.io/.../sam2-kubeflow:0.1.0-train``."""
    return f"{IMAGE_REPOSITORY}:{__version__}-{flavour}"
