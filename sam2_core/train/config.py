"""Training configuration: Hydra composition of the packaged configs + typed schema.

Composition (configs ship inside the package, ``sam2_core/configs``): ``train.yaml`` with the
groups ``model`` (architecture, one file per model name), ``data``, ``optim``, ``trainer`` and
``experiment`` (``smoke``, ``mose_finetune``, ``sav_finetune``). Every value can be overridden
with ``key=value``; everything except the model architecture is checked against the dataclasses
below, and errors name the key and the allowed values/keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam2_core.data.loader.config import LoaderConfig
from sam2_core.train.iuq import IUQConfig
from sam2_core.train.losses import LossConfig
from sam2_core.train.optim import OptimConfig
from sam2_core.train.prompts import PromptConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRIMARY = "train"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("bfloat16", "float16")
#: ``trainer.resume``: ``auto`` resumes the run recorded in the output folder and refuses a
#: different one; ``new`` replaces a different or finished run there (sam2_core.train.run_identity)
RESUME_MODES = ("auto", "new")


class ConfigError(ValueError):
    """A bad configuration value or override (message names the key and what is allowed)."""


@dataclass
class DataSection(LoaderConfig):
    """Where training/validation data come from and how clips are sampled.

    Exactly one of ``shards`` (Parquet shards URL), ``raw`` (any dataset URL readable by
    ``sam2_core.data.readers.formats.iter_videos``) or ``synthetic`` is used; ``demo`` generates the
    built-in demo dataset into ``<output_dir>/demo_data`` when neither URL is given.

    The loader settings themselves (``shards``, ``raw``, ``resolution``, ``num_frames``,
    ``augment``, ``sources``, ...) are those of :class:`~sam2_core.data.loader.config.LoaderConfig`,
    defined there once; this section adds only where the data come from besides a URL and what
    validation reads.
    """

    synthetic: bool = False
    demo: bool = False
    demo_num_videos: int = 6
    demo_num_frames: int = 24
    #: validation data URL (any format); None = validate on the training split "val" of shards
    val: str | None = None
    val_max_videos: int | None = 20

    def loader_config(self, *, raw: str | None) -> LoaderConfig:
        """The loader's settings, with ``raw`` replacing this section's (e.g. the demo data)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(LoaderConfig)}
        return LoaderConfig(**{**own, "raw": raw})


@dataclass
class TrainerConfig:
    output_dir: str = "./outputs/train"
    max_steps: int = 1000
    device: str = "auto"
    seed: int = 123
    #: autocast on GPU (on CPU only with ``cpu_amp``; otherwise CPU trains in fp32)
    amp: bool = True
    amp_dtype: str = "bfloat16"
    #: bf16 autocast on CPU as well (about 1.3x faster steps on CPUs with native bf16 matmuls,
    #: AVX512-BF16 / AMX; off by default so CPU runs stay fp32 like the reference's)
    cpu_amp: bool = False
    #: activation checkpointing of the image encoder and of the correction-click SAM heads
    activation_checkpointing: bool = False
    #: activation checkpointing inside the image encoder, block by block (Hiera): the peak holds
    #: one block's activations instead of the whole trunk's during the recomputation
    checkpoint_encoder_blocks: bool = False
    compile: bool = False
    ckpt_every: int = 500
    keep_last: int = 3
    val_every: int = 0
    log_every: int = 10
    image_every: int = 200
    progress: bool = True
    find_unused_parameters: bool = True
    dist_backend: str | None = None
    dist_timeout_min: float = 30.0
    #: keep training when validation code or data is missing (log a line) instead of failing
    skip_missing_validation: bool = True
    #: auto | new (RESUME_MODES): what to do with a different or finished run in output_dir
    resume: str = "auto"


@dataclass
class TrainConfig:
    """Everything :func:`sam2_core.train.trainer.run_training` needs."""

    #: model architecture node (Hydra ``_target_`` tree) + ``checkpoint``
    model: dict[str, Any]
    model_name: str
    data: DataSection = field(default_factory=DataSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: instance-unique querying / equivariance objectives (sam2_core.train.iuq), off by default
    iuq: IUQConfig = field(default_factory=IUQConfig)
    #: the ``experiment=`` choice the config was composed with (part of the run identity)
    experiment: str | None = None

    @property
    def checkpoint(self) -> str | None:
        ckpt = self.model.get("checkpoint")
        return str(ckpt) if ckpt else None

    @property
    def checkpoint_sha256(self) -> str | None:
        """``model.checkpoint_sha256``: the pinned digest of the initial checkpoint, if any."""
        pin = self.model.get("checkpoint_sha256")
        return str(pin) if pin else None

    def validate(self) -> None:
        t = self.trainer
        if t.device not in DEVICE_CHOICES:
            raise ConfigError(
                f"trainer.device={t.device!r} is not allowed; allowed values: {', '.join(DEVICE_CHOICES)}"
            )
        if t.amp_dtype not in AMP_DTYPES:
            raise ConfigError(
                f"trainer.amp_dtype={t.amp_dtype!r} is not allowed; allowed values: {', '.join(AMP_DTYPES)}"
            )
        if t.cpu_amp and t.amp_dtype != "bfloat16":
            raise ConfigError(
                f"trainer.cpu_amp=true needs trainer.amp_dtype=bfloat16 (got {t.amp_dtype!r}): "
                "CPU autocast has no float16 loss scaling"
            )
        if t.resume not in RESUME_MODES:
            raise ConfigError(
                f"trainer.resume={t.resume!r} is not allowed; allowed values: {', '.join(RESUME_MODES)}"
            )
        if t.dist_backend not in (None, "gloo", "nccl"):
            raise ConfigError(
                f"trainer.dist_backend={t.dist_backend!r}; allowed values: null, gloo, nccl"
            )
        for key in ("max_steps", "log_every"):
            if getattr(t, key) < 1:
                raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(t, key)}")
        for key in ("ckpt_every", "val_every", "image_every", "keep_last"):
            if getattr(t, key) < 0:
                raise ConfigError(f"trainer.{key} must be >= 0, got {getattr(t, key)}")
        d = self.data
        if d.resolution % 32 != 0:
            raise ConfigError(
                f"data.resolution must be a multiple of 32 (Hiera), got {d.resolution}"
            )
        for key in ("num_frames", "max_num_objects", "batch_size"):
            if getattr(d, key) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {getattr(d, key)}")
        if d.shards and d.raw:
            raise ConfigError("set only one of data.shards and data.raw")
        try:
            self.prompts.validate()
            self.iuq.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if self.checkpoint:
            # A misspelt released name, or one of another model size: refused before any work
            # starts (a name lookup only; the download happens when training starts).
            from sam2_core.model.released import check_model, lookup

            try:
                release = lookup(self.checkpoint, model=self.model_name)
                if release is not None:
                    check_model(release, self.model_name)
            except ValueError as e:
                # the message names Python-side choices; add the override that gives them
                fix = " (model.checkpoint=null)" if self.checkpoint == "released" else ""
                raise ConfigError(f"model.checkpoint: {e}{fix}") from e
        image_size = self.model.get("image_size")
        if image_size is not None and int(image_size) != d.resolution:
            raise ConfigError(
                f"data.resolution={d.resolution} differs from model.image_size={image_size}; "
                "set both (e.g. data.resolution=N model.image_size=N)"
            )


# ----------------------------------------------------------------------------------------------


def _allowed_keys(schema: Any, dotted: str) -> list[str] | None:
    """Field names of the dataclass that ``dotted`` (a key path) points into, if any."""
    node = schema
    parts = dotted.split(".")[:-1]
    for part in parts:
        if not dataclasses.is_dataclass(node):
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        f = fields[part]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        node = default
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return None


def _schema_defaults() -> TrainConfig:
    return TrainConfig(model={}, model_name="tiny")


def compose_config(overrides: list[str] | None = None) -> Any:
    """Compose the packaged Hydra configs with ``overrides``; returns a DictConfig.

    Raises :class:`ConfigError` with the offending key and the allowed options/keys.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(PRIMARY, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain(e, overrides)) from e
    return cfg


def _explain(e: Exception, overrides: list[str]) -> str:
    # Hydra appends its search path; users need the key and the options, not that.
    msg = str(e).strip().split("\nConfig search path:")[0].strip()
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" not in msg and f"/{ov.split('=', 1)[-1]}'" not in msg:
            continue
        if "." in key and ("not in struct" in msg or "Could not override" in msg):
            allowed = _allowed_keys(_schema_defaults(), key)
            if allowed:
                parent = key.rsplit(".", 1)[0]
                msg += f"\nallowed keys under '{parent}': {', '.join(allowed)}"
        return f"bad override {ov!r}: {msg}"
    return msg


def to_train_config(cfg: Any) -> TrainConfig:
    """Check a composed DictConfig against the schema and turn it into a :class:`TrainConfig`."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    model_name = "custom"
    experiment: str | None = None
    if "hydra" in cfg:
        model_name = str(cfg.hydra.runtime.choices.get("model", "custom"))
        chosen = cfg.hydra.runtime.choices.get("experiment")
        experiment = str(chosen) if chosen else None
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(
            f"config key '{getattr(e, 'full_key', '')}': {str(e).splitlines()[0]}"
        ) from e
    assert isinstance(raw, dict)
    # No code from data: Hydra would instantiate a `_target_` from an override (issue 16).
    from sam2_core.model.build import DisallowedTarget, check_targets

    try:
        check_targets(raw, path="")
    except DisallowedTarget as e:
        raise ConfigError(str(e)) from e
    model = raw.pop("model", None) or {}
    unknown = set(raw) - {"data", "optim", "prompts", "loss", "trainer", "iuq"}
    if unknown:
        raise ConfigError(
            f"unknown top-level config keys {sorted(unknown)}; allowed: model, data, optim, "
            "prompts, loss, trainer, iuq"
        )
    schema = OmegaConf.structured(
        {
            "data": DataSection,
            "optim": OptimConfig,
            "prompts": PromptConfig,
            "loss": LossConfig,
            "trainer": TrainerConfig,
            "iuq": IUQConfig,
        }
    )
    try:
        merged = OmegaConf.merge(schema, raw)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        extra = ""
        if "not in struct" in str(e) or "not in" in msg:
            allowed = _allowed_keys(_schema_defaults(), key) if key else None
            extra = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        raise ConfigError(f"config key '{key}': {msg}{extra}") from e
    assert isinstance(typed, dict)
    sections: dict[str, Any] = {str(k): v for k, v in typed.items()}
    out = TrainConfig(model=dict(model), model_name=model_name, experiment=experiment, **sections)
    out.validate()
    return out


def load_train_config(overrides: list[str] | None = None) -> TrainConfig:
    """Compose + validate: the one call the CLI and tests use."""
    return to_train_config(compose_config(overrides))
