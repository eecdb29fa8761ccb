"""Meta's released SAM 2 / SAM 2.1 checkpoints by name, fetched once into a cache.

``model.checkpoint`` (train), ``init_checkpoint`` (pipeline) and ``--checkpoint`` (evaluate,
export) accept a released name as well as a path or URL:

* ``sam2.1_hiera_tiny``, ``sam2.1_hiera_small``, ``sam2.1_hiera_base_plus``,
  ``sam2.1_hiera_large``: SAM 2.1 (``.../segment_anything_2/092824/<name>.pt``), loading into
  the configs ``sam2.1_hiera_t``, ``sam2.1_hiera_s``, ``sam2.1_hiera_b+``, ``sam2.1_hiera_l``;
* ``sam2_hiera_tiny`` ... ``sam2_hiera_large``: SAM 2.0 (``.../072824/<name>.pt``), same sizes.

The URLs are those of ``checkpoints/download_ckpts.sh`` in Meta's ``facebookresearch/sam2``
repository. SAM 2.0 files load into the SAM 2.1 config of their size with
:data:`SAM2_0_OVERRIDES` (SAM 2.1 added the spatial no-object embedding and the projected,
signed temporal encoding of object pointers; everything else is identical).

:func:`resolve_checkpoint` turns a name into a verified local path or URL: the file is
downloaded once into ``<cache>/<file>`` (a local folder, a PVC mount or ``gs://``/``s3://``; see
:mod:`sam2_core.download`), or taken from a pre-staged mirror (``$SAM2KF_CHECKPOINT_MIRROR``: a
folder/bucket used in place, or an ``http(s)://`` server inside the cluster) on air-gapped
clusters. Paths and URLs pass through unchanged. The strict key/shape check happens when the
file is loaded (:func:`sam2_core.model.build.load_checkpoint`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sam2_core import storage
from sam2_core.download import DownloadError, cached, download, file_sha256, normalise_sha256

log = logging.getLogger(__name__)

#: Folder or URL holding pre-staged copies (``<mirror>/<file>``), for clusters without internet.
MIRROR_ENV = "SAM2KF_CHECKPOINT_MIRROR"
#: Default cache folder/URL for downloads (else ``$XDG_CACHE_HOME/sam2kf/checkpoints``).
CACHE_ENV = "SAM2KF_CHECKPOINT_CACHE"

#: Checkpoint spec meaning "Meta's SAM 2.1 checkpoint of the model size being built" (for
#: configs that work for every size, e.g. ``model.checkpoint: released`` in an experiment).
RELEASED_FOR_MODEL = "released"

SAM2_1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
SAM2_0_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"

#: Model-config overrides (dotlist relative to the model node) that make a SAM 2.1 config
#: match a SAM 2.0 checkpoint: Meta's ``sam2_hiera_*.yaml`` differ from ``sam2.1_hiera_*.yaml``
#: in exactly these four flags. On the ``sam2kf train`` command line prefix them with ``model.``.
SAM2_0_OVERRIDES: tuple[str, ...] = (
    "add_tpos_enc_to_obj_ptrs=false",
    "proj_tpos_enc_in_obj_ptrs=false",
    "use_signed_tpos_enc_to_obj_ptrs=false",
    "no_obj_embed_spatial=false",
)

_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


class UnknownCheckpointName(ValueError):
    """A checkpoint spec that looks like a released name but is none (one-line message)."""


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One of Meta's released checkpoints.

    Attributes:
        name: the name users give (``sam2.1_hiera_base_plus``).
        model: the :func:`sam2_core.model.build_model` config it loads into (``sam2.1_hiera_b+``).
        url: Meta's download URL.
        version: ``"2.1"`` or ``"2.0"``.
        overrides: model-config overrides needed on top of ``model`` (SAM 2.0 files only).
    """

    name: str
    model: str
    url: str
    version: str
    overrides: tuple[str, ...] = ()

    @property
    def file(self) -> str:
        """File name in the cache and in a mirror (``sam2.1_hiera_base_plus.pt``)."""
        return self.url.rsplit("/", 1)[-1]


def _entry(version: str, size: str, short: str) -> ReleasedCheckpoint:
    prefix, base = ("sam2.1", SAM2_1_BASE_URL) if version == "2.1" else ("sam2", SAM2_0_BASE_URL)
    name = f"{prefix}_hiera_{size}"
    return ReleasedCheckpoint(
        name=name,
        model=f"sam2.1_hiera_{short}",
        url=f"{base}{name}.pt",
        version=version,
        overrides=() if version == "2.1" else SAM2_0_OVERRIDES,
    )


#: Released name -> checkpoint (SAM 2.1 first, then SAM 2.0; small to large).
RELEASED: dict[str, ReleasedCheckpoint] = {
    r.name: r
    for r in (
        _entry(version, size, short)
        for version in ("2.1", "2.0")
        for size, short in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
    )
}
RELEASED_NAMES: tuple[str, ...] = tuple(RELEASED)

# Config names the released files fit, plus the test-only model (which none fits).
_KNOWN_MODELS = frozenset({r.model for r in RELEASED.values()} | {"tiny"})


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """What :func:`resolve_checkpoint` made of a checkpoint spec.

    Attributes:
        spec: the value the user gave.
        path: local path or URL to load (``spec`` itself unless it was a released name).
        sha256: digest of the file (always known for released names, so a registry can record
            it on first use; for other specs only when a digest was pinned and checked).
        release: the released checkpoint, or ``None`` for a path/URL.
        source: where the bytes came from (Meta's URL, the mirror, or ``path``).
        origin: ``"downloaded"`` (bytes transferred by this call), ``"cache"`` (an earlier
            download), ``"mirror"`` (a pre-staged copy used in place) or ``"path"`` (not a
            released name).
    """

    spec: str
    path: str
    sha256: str | None
    release: ReleasedCheckpoint | None
    source: str
    origin: str

    @property
    def downloaded(self) -> bool:
        return self.origin == "downloaded"

    @property
    def overrides(self) -> tuple[str, ...]:
        """Model-config overrides the file needs (non-empty for SAM 2.0 files only)."""
        return self.release.overrides if self.release else ()

    def describe(self) -> str:
        """One log line, e.g. ``released checkpoint sam2.1_hiera_tiny (sha256 …) at <path>``."""
        if self.release is None:
            pin = f" (sha256 {self.sha256} verified)" if self.sha256 else ""
            return f"checkpoint {self.path}{pin}"
        how = {
            "downloaded": f"downloaded from {self.source}",
            "cache": "already in the cache",
            "mirror": "pre-staged mirror copy",
        }.get(self.origin, self.origin)
        return (
            f"released checkpoint {self.release.name} (SAM {self.release.version}, model "
            f"{self.release.model}, sha256 {self.sha256}) at {self.path}, {how}"
        )


def _looks_like_name(spec: str) -> bool:
    """True for bare words such as ``sam2.1_hiera_huge`` (no folder, scheme or file suffix)."""
    low = spec.lower()
    if "/" in spec or os.sep in spec or "://" in spec or low.endswith(_WEIGHT_SUFFIXES):
        return False
    return low.startswith("sam2") or "hiera" in low


def lookup(spec: str, *, model: str | None = None) -> ReleasedCheckpoint | None:
    """The released checkpoint named ``spec``; ``None`` for paths and URLs.

    ``spec`` may also be :data:`RELEASED_FOR_MODEL` (``"released"``): the SAM 2.1 checkpoint
    of ``model``'s size.

    Raises:
        UnknownCheckpointName: ``spec`` looks like a released name but is none (and is not an
            existing file), e.g. a typo or a model config name such as ``sam2.1_hiera_b+``;
            or ``"released"`` for a model without released weights.
    """
    name = spec.strip()
    if name == RELEASED_FOR_MODEL:
        sized = for_model(model) if model else None
        if sized is None:
            sizes = ", ".join(r.model for r in RELEASED.values() if r.version == "2.1")
            raise UnknownCheckpointName(
                f"checkpoint {RELEASED_FOR_MODEL!r} needs a model with released weights "
                f"({sizes}), not {model or 'an unnamed model'}; choose one of those models, or "
                "give no checkpoint to start from the initial weights"
            )
        return sized
    if name in RELEASED:
        return RELEASED[name]
    if not _looks_like_name(name) or os.path.exists(name):
        return None
    hint = ""
    sized = for_model(name)
    if sized is not None:
        hint = f" ({name} is a model config name; its released checkpoint is {sized.name})"
    raise UnknownCheckpointName(
        f"unknown released checkpoint {spec!r}{hint}; choose one of "
        f"{', '.join(RELEASED_NAMES)}, or give a checkpoint path or URL"
    )


def for_model(model: str, *, version: str = "2.1") -> ReleasedCheckpoint | None:
    """The released checkpoint of a model config (``sam2.1_hiera_b+`` -> base_plus), if any."""
    for release in RELEASED.values():
        if release.model == model and release.version == version:
            return release
    return None


def check_model(release: ReleasedCheckpoint, model: str) -> None:
    """Refuse (one line) a released checkpoint of another size than the named model config.

    The strict loader would also refuse it, with a long list of mis-shaped keys; this says what
    to change. Model YAML paths are not checked here (the loader still is).
    """
    if model == release.model or model not in _KNOWN_MODELS:
        return
    other = for_model(model, version=release.version)
    alt = f", or use the checkpoint {other.name}" if other else ""
    raise ValueError(
        f"checkpoint {release.name} is for model {release.model}, not {model}; "
        f"set the model to {release.model}{alt}"
    )


def default_cache() -> str:
    """``$SAM2KF_CHECKPOINT_CACHE``, else ``$XDG_CACHE_HOME/sam2kf/checkpoints`` (~/.cache)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sam2kf", "checkpoints")


def resolve_checkpoint(
    spec: str,
    *,
    model: str | None = None,
    cache: str | None = None,
    sha256: str | None = None,
    mirror: str | None = None,
    progress: bool = True,
    retries: int = 2,
) -> ResolvedCheckpoint:
    """Turn a checkpoint spec into a verified path: released names are fetched once.

    Args:
        spec: a released name (:data:`RELEASED_NAMES`), ``"released"`` (the SAM 2.1 checkpoint
            of ``model``), or a path/URL (returned unchanged).
        model: the model config the checkpoint is for; a released checkpoint of another size
            is refused (:func:`check_model`). ``None`` skips the check.
        cache: folder or fsspec URL for downloads (``<cache>/<file>``); default
            :func:`default_cache`. Use the run's storage (PVC path, ``gs://bucket/cache``) so
            every pod and later run reuses one copy.
        sha256: pinned digest (hex or ``sha256:<hex>``): a file that does not match is refused.
            For a path/URL spec it is checked too (reading the file once).
        mirror: folder/URL with pre-staged copies (``<mirror>/<file>``); default
            ``$SAM2KF_CHECKPOINT_MIRROR``. A folder or bucket is used in place (put a
            ``<file>.sha256`` from ``sha256sum`` next to the file to skip hashing it on each
            use); an ``http(s)://`` mirror is downloaded into ``cache`` like Meta's URL.
        progress: show a download progress bar.
        retries: extra attempts (each resuming) when a transfer breaks off.

    Raises:
        UnknownCheckpointName: a name-like spec that is no released name.
        ValueError: a released checkpoint of another size than ``model`` (subclasses of
            ``ValueError`` above too).
        DownloadError: download failed or was refused, or the mirror lacks the file.
        ValueError: ``sha256`` is not a digest.
    """
    pinned = normalise_sha256(sha256) if sha256 else None
    release = lookup(spec, model=model)
    if release is not None and model is not None:
        check_model(release, model)
    if release is None:
        digest = None
        if pinned is not None and spec and storage.exists(spec):
            fs, path = storage.get_fs(spec)
            if fs.isdir(path):
                raise ValueError(
                    f"checkpoint {spec} is a folder; a sha256 pin needs the checkpoint file "
                    "itself (e.g. .../model_final.pt)"
                )
            digest, _size = file_sha256(spec)
            if digest != pinned:
                raise DownloadError(
                    f"checkpoint {spec}: sha256 {digest} does not match the pinned {pinned}; "
                    "correct the pin or the path"
                )
        return ResolvedCheckpoint(
            spec=spec, path=spec, sha256=digest, release=None, source=spec, origin="path"
        )
    folder = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    if folder and not folder.startswith(("http://", "https://")):
        staged = storage.join(folder, release.file)
        hit = cached(staged, sha256=pinned, record=False)
        if hit is None:
            raise DownloadError(
                f"released checkpoint {release.name}: {staged} not found in the checkpoint "
                f"mirror {folder} ({MIRROR_ENV} or mirror=); copy {release.url} there, or unset "
                "the mirror to download it"
            )
        return ResolvedCheckpoint(
            spec=spec,
            path=staged,
            sha256=hit.sha256,
            release=release,
            source=staged,
            origin="mirror",
        )
    url = storage.join(folder, release.file) if folder else release.url
    dest = storage.join(cache or default_cache(), release.file)
    try:
        got = download(url, dest, sha256=pinned, progress=progress, retries=retries)
    except DownloadError as exc:
        if not exc.network:
            raise
        raise DownloadError(
            f"{exc}. Without internet access, pre-stage {release.file} and set {MIRROR_ENV} "
            "to its folder",
            network=True,
        ) from None
    resolved = ResolvedCheckpoint(
        spec=spec,
        path=got.path,
        sha256=got.sha256,
        release=release,
        source=got.source,
        origin="cache" if got.from_cache else "downloaded",
    )
    log.info("%s", resolved.describe())
    return resolved
