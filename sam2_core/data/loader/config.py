"""The one typed configuration of the training loader (defaults: Meta's MOSE fine-tuning recipe).

:class:`LoaderConfig` holds every loader setting once. Its nested parts are the concepts that
other code uses on their own:

- :class:`SourceConfig`: one dataset of the training set and how clips are sampled from it.
  ``LoaderConfig`` *is* a ``SourceConfig`` (its own single source, the usual case); for mixed
  image + video training list several in ``sources`` instead.
- :class:`AugmentConfig`: the clip augmentation recipe, all the transforms need besides the
  output resolution.

Hydra and YAML hand nested parts over as plain mappings; :class:`LoaderConfig` turns them into
the typed classes, so ``LoaderConfig(**mapping)`` works for a composed config as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class AugmentConfig:
    """Clip augmentations, consistent across the frames of a clip (see :mod:`.transforms`).

    ``enabled=False`` applies only the square resize and the normalisation (evaluation).
    Probabilities are per clip; angles are in degrees; colour jitter strengths are the
    half-widths of the uniform factor around 1 (shared by all frames, then per frame).
    """

    enabled: bool = True
    hflip_prob: float = 0.5
    degrees: float = 25.0
    shear: float = 20.0
    brightness: float = 0.1
    contrast: float = 0.03
    saturation: float = 0.03
    grayscale_prob: float = 0.05
    frame_brightness: float = 0.1
    frame_contrast: float = 0.05
    frame_saturation: float = 0.05


@dataclass
class SourceConfig:
    """One dataset of the training set (an image dataset is one with ``num_frames=1``).

    Set ``shards`` (a ``sam2kf shard`` output) or ``raw`` (any dataset ``iter_videos`` reads,
    e.g. a JPEG frame folder; a Parquet shard directory given here is read as shards).
    """

    #: name of the dataset (the key of its batches in ``BatchedVideo.dict_key``)
    name: str = "all"
    shards: str | None = None
    raw: str | None = None
    #: format of ``raw`` (``auto`` detects it; see ``sam2_core.data.readers.formats.FORMATS``)
    fmt: str = "auto"
    #: split to train on (None: every video)
    split: str | None = "train"
    batch_size: int = 1
    #: frames per clip
    num_frames: int = 8
    #: objects per clip at most (chosen at random among the visible ones)
    max_num_objects: int = 3
    #: chance that a clip is played backwards
    reverse_time_prob: float = 0.0
    #: how many times every video appears in an epoch
    multiplier: int = 1


@dataclass
class LoaderConfig(SourceConfig):
    """Training loader settings: its own source (the fields of :class:`SourceConfig`) or
    several ``sources`` (then the inherited source fields are ignored), plus the settings of
    the whole loader."""

    #: side of the square clips the transforms produce, in pixels
    resolution: int = 1024
    #: DataLoader worker processes per rank (0: load in the training process)
    num_workers: int = 2
    pin_memory: bool = False
    #: batches each worker prepares ahead
    prefetch_factor: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: mixed training: one entry per dataset, each with its own batch size and loader
    sources: list[SourceConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.augment, Mapping):
            self.augment = AugmentConfig(**self.augment)
        self.sources = [SourceConfig(**s) if isinstance(s, Mapping) else s for s in self.sources]

    def source_configs(self) -> list[SourceConfig]:
        """The datasets to load: ``sources``, or this config's own single source."""
        if self.sources:
            return list(self.sources)
        if not self.shards and not self.raw:
            raise ValueError("LoaderConfig needs data.shards, data.raw or data.sources")
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(SourceConfig)}
        return [SourceConfig(**own)]
