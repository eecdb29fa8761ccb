"""The identity of a training run, recorded in its output folder as ``run.json``.

Resume is keyed on the output folder; this file makes sure the run found there is the run being
asked for. The identity is the model name, the experiment, the training data (URL, and for
Parquet shards the index checksum of their manifest, which changes with every data version) and
a hash of the resolved configuration without the settings that may legitimately change between
a run and its resumption (:data:`RESUMABLE_KEYS`: ``trainer.max_steps``, logging and checkpoint
cadence, device, data-loader workers, validation data...). The hashed values are stored too, so
a refusal can name the keys that differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from sam2_core import storage
from sam2_core.train.config import ConfigError, DataSection, TrainConfig

log = logging.getLogger(__name__)

RUN_FILE = "run.json"

#: Config keys left out of the hash: changing them does not make a different run.
RESUMABLE_KEYS = frozenset(
    {
        "trainer.output_dir",
        "trainer.max_steps",
        "trainer.resume",
        "trainer.device",
        "trainer.progress",
        "trainer.log_every",
        "trainer.image_every",
        "trainer.val_every",
        "trainer.ckpt_every",
        "trainer.keep_last",
        "trainer.compile",
        "trainer.activation_checkpointing",
        "trainer.checkpoint_encoder_blocks",
        "trainer.find_unused_parameters",
        "trainer.dist_backend",
        "trainer.dist_timeout_min",
        "trainer.skip_missing_validation",
        "data.num_workers",
        "data.val",
        "data.val_max_videos",
    }
)

#: How many differing keys a refusal names before "and N more".
_SHOWN_KEYS = 3


class ResumeError(ConfigError):
    """The output folder holds a run this configuration must not resume (message: one line)."""


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1, "c": [{"d": 2}]}}`` -> ``{"a.b": 1, "a.c.0.d": 2}``; lists of plain
    values stay leaves (as JSON lists)."""
    if isinstance(obj, list | tuple) and any(isinstance(v, dict | list | tuple) for v in obj):
        obj = {str(i): v for i, v in enumerate(obj)}
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not obj and prefix:
            out[prefix[:-1]] = {}
        return out
    if isinstance(obj, list | tuple):
        return {prefix[:-1]: json.loads(json.dumps(list(obj), default=str))}
    if obj is None or isinstance(obj, bool | int | float | str):
        return {prefix[:-1]: obj}
    return {prefix[:-1]: str(obj)}


def hashed_config(*, cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as flat ``key -> value`` without :data:`RESUMABLE_KEYS`."""
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    plain = {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v  # type: ignore[arg-type]
        for k, v in sections.items()
        if k not in ("model_name", "experiment")  # recorded as identity fields of their own
    }
    flat = _flatten(plain)
    return {k: flat[k] for k in sorted(flat) if k not in RESUMABLE_KEYS}


def config_sha256(config: dict[str, Any]) -> str:
    """Hash of a :func:`hashed_config` mapping (canonical JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def data_source(*, data: DataSection) -> tuple[str, str | None]:
    """``(description, version)`` of the training data: the URL the loader reads and, for
    Parquet shards, their manifest's index sha256 (None when unreadable or not shards)."""
    if data.synthetic:
        return "synthetic", None
    if data.shards:
        try:
            manifest = storage.read_json(storage.join(data.shards, "manifest.json"))
            version = manifest.get("index_sha256") if isinstance(manifest, dict) else None
        except (OSError, ValueError):
            version = None  # the loader reports unreadable shards with its own message
        return f"shards {data.shards}", str(version) if version else None
    if data.raw:
        return f"raw {data.raw}", None
    return f"demo {data.demo_num_videos} videos x {data.demo_num_frames} frames", None


@dataclass(frozen=True)
class RunIdentity:
    """What makes two invocations the same run (see the module docstring)."""

    model: str
    experiment: str | None
    data: str
    data_version: str | None
    config_sha256: str
    #: the hashed values, so that differences can be named
    config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, *, cfg: TrainConfig) -> RunIdentity:
        config = hashed_config(cfg=cfg)
        data, version = data_source(data=cfg.data)
        return cls(
            model=cfg.model_name,
            experiment=cfg.experiment,
            data=data,
            data_version=version,
            config_sha256=config_sha256(config),
            config=config,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunIdentity:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})

    def differences(self, other: RunIdentity) -> list[str]:
        """``"<what> <recorded> -> <other>"`` for each identity field that differs."""
        out = [
            f"{name} {getattr(self, name)} -> {getattr(other, name)}"
            for name in ("model", "experiment", "data", "data_version")
            if getattr(self, name) != getattr(other, name)
        ]
        if self.config_sha256 != other.config_sha256:
            keys = sorted(
                k
                for k in set(self.config) | set(other.config)
                if self.config.get(k, "<unset>") != other.config.get(k, "<unset>")
            )
            shown = [
                f"{k} {self.config.get(k, '<unset>')} -> {other.config.get(k, '<unset>')}"
                for k in keys[:_SHOWN_KEYS]
            ]
            if len(keys) > _SHOWN_KEYS:
                shown.append(f"and {len(keys) - _SHOWN_KEYS} more config keys")
            if not shown:  # recorded without values (hand-written file): name the hashes
                shown = [f"config {self.config_sha256[:12]} -> {other.config_sha256[:12]}"]
            out.extend(shown)
        return out


def read_identity(*, output_dir: str) -> RunIdentity | None:
    """The identity recorded in ``<output_dir>/run.json``; None when there is none (a folder
    written before run identities existed) or it is unreadable (then it is re-recorded)."""
    url = storage.join(output_dir, RUN_FILE)
    if not storage.exists(url):
        return None
    try:
        obj = storage.read_json(url)
        return RunIdentity.from_json(obj) if isinstance(obj, dict) else None
    except (OSError, ValueError, TypeError) as e:
        log.warning("ignoring unreadable %s (%s)", url, e)
        return None


def write_identity(*, output_dir: str, identity: RunIdentity) -> None:
    """Record ``identity`` as ``<output_dir>/run.json`` (atomically)."""
    storage.write_json_atomic(storage.join(output_dir, RUN_FILE), identity.to_json())
