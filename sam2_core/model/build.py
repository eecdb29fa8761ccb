"""Build SAM 2.1 models from Hydra configs; load and export official-format checkpoints.

* :func:`build_model` instantiates ``sam2_core/configs/model/<name>.yaml`` (or any YAML path,
  including Meta's official ``sam2.1_hiera_*.yaml`` whose ``sam2.*`` targets are mapped onto
  ours) and optionally loads a checkpoint strictly.
* :func:`load_checkpoint` reads ``{"model": state_dict}`` files (official checkpoints, our
  exports and training checkpoints) with ``torch.load(weights_only=True)`` or ``.safetensors``
  and fails with :class:`CheckpointError` listing every missing, unexpected or mis-shaped key.
* :func:`export_checkpoint` writes ``{"model": state_dict}`` atomically to any fsspec URL, the
  format Meta's ``build_sam2`` loads.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sam2_core import storage
from sam2_core.model.sam2 import SAM2Base

#: Names accepted by :func:`build_model` (``sam2_core/configs/model/<name>.yaml``).
MODEL_NAMES: tuple[str, ...] = (
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
    "tiny",
)

#: Meta's checkpoint file names -> our config names (for messages and the README).
OFFICIAL_CHECKPOINTS: dict[str, str] = {
    "sam2.1_hiera_tiny.pt": "sam2.1_hiera_t",
    "sam2.1_hiera_small.pt": "sam2.1_hiera_s",
    "sam2.1_hiera_base_plus.pt": "sam2.1_hiera_b+",
    "sam2.1_hiera_large.pt": "sam2.1_hiera_l",
}

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "model"

# Official module paths -> ours, so that Meta's YAML files build our classes.
_OFFICIAL_TARGETS: dict[str, str] = {
    "sam2.modeling.sam2_base.SAM2Base": "sam2_core.model.sam2.SAM2Base",
    "sam2.sam2_video_predictor.SAM2VideoPredictor": "sam2_core.model.sam2.SAM2Base",
    "training.model.sam2.SAM2Train": "sam2_core.model.sam2.SAM2Base",
    "sam2.modeling.backbones.image_encoder.ImageEncoder": "sam2_core.model.nn.image_encoder.ImageEncoder",
    "sam2.modeling.backbones.image_encoder.FpnNeck": "sam2_core.model.nn.image_encoder.FpnNeck",
    "sam2.modeling.backbones.hieradet.Hiera": "sam2_core.model.nn.hiera.Hiera",
    "sam2.modeling.position_encoding.PositionEmbeddingSine": "sam2_core.model.nn.position_encoding.PositionEmbeddingSine",
    "sam2.modeling.memory_attention.MemoryAttention": "sam2_core.model.nn.memory_attention.MemoryAttention",
    "sam2.modeling.memory_attention.MemoryAttentionLayer": "sam2_core.model.nn.memory_attention.MemoryAttentionLayer",
    "sam2.modeling.sam.transformer.RoPEAttention": "sam2_core.model.nn.memory_attention.RoPEAttention",
    "sam2.modeling.memory_encoder.MemoryEncoder": "sam2_core.model.nn.memory_encoder.MemoryEncoder",
    "sam2.modeling.memory_encoder.MaskDownSampler": "sam2_core.model.nn.memory_encoder.MaskDownSampler",
    "sam2.modeling.memory_encoder.Fuser": "sam2_core.model.nn.memory_encoder.Fuser",
    "sam2.modeling.memory_encoder.CXBlock": "sam2_core.model.nn.memory_encoder.CXBlock",
}

#: Torch targets a config may name; none of the packaged configs instantiates a torch class
#: today (the optimizer's ``module_cls_names`` such as ``torch.nn.LayerNorm`` are matched, not
#: built), so the list is empty. Add a name here only together with a config that needs it.
ALLOWED_TORCH_TARGETS: frozenset[str] = frozenset()

#: The only ``_target_``s a config may name: the model's own module classes under
#: ``sam2_core.model`` (every target of the packaged YAMLs, and of Meta's once mapped onto ours),
#: plus :data:`ALLOWED_TORCH_TARGETS`. Hydra's ``instantiate`` imports and calls whatever a
#: ``_target_`` names, and configs arrive from overrides (the pipeline's ``overrides`` parameter,
#: a CronJob's ConfigMap): an exact list (not a prefix) also keeps out functions of our own
#: modules, e.g. ``sam2_core.model.build.export_checkpoint``, which writes where it is told.
ALLOWED_TARGETS: frozenset[str] = frozenset(_OFFICIAL_TARGETS.values()) | ALLOWED_TORCH_TARGETS

# Keys that may sit in a model config node but are not SAM2Base arguments (e.g. the training
# config's `model.checkpoint`, or video-predictor settings of the official configs).
_NON_MODEL_KEYS = (
    "checkpoint",
    "checkpoint_sha256",
    "fill_hole_area",
    "non_overlap_masks",
    "clear_non_cond_mem_around_input",
    "add_all_frames_to_correct_as_cond",
)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU; anything else -> ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match the model (message lists the keys)."""


class DisallowedTarget(ValueError):
    """A config names a ``_target_`` outside the allowlist (one line: key path and target)."""


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------


def config_path(name: str) -> Path:
    """Path of the YAML for a model name (or the path itself if ``name`` is a YAML file)."""
    if name in MODEL_NAMES:
        return CONFIG_DIR / f"{name}.yaml"
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    raise ValueError(
        f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)} or a YAML path"
    )


def _map_targets(node: Any) -> Any:
    """Recursively replace official ``_target_``s by ours (plain containers in, out)."""
    if isinstance(node, dict):
        out = {k: _map_targets(v) for k, v in node.items()}
        t = out.get("_target_")
        if isinstance(t, str) and t in _OFFICIAL_TARGETS:
            out["_target_"] = _OFFICIAL_TARGETS[t]
        return out
    if isinstance(node, list):
        return [_map_targets(v) for v in node]
    return node


def check_targets(node: Any, *, path: str = "model") -> None:
    """Refuse any ``_target_`` in ``node`` (plain dicts/lists) that is not allowlisted.

    Allowed: exactly the names in :data:`ALLOWED_TARGETS`. Nothing is imported to check.

    Args:
        node: a config tree as plain containers (``OmegaConf.to_container``).
        path: the key path of ``node``, for the message (``model.image_encoder._target_``).

    Raises:
        DisallowedTarget: naming the first offending key path and its target.
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                if not isinstance(value, str) or value not in ALLOWED_TARGETS:
                    raise DisallowedTarget(
                        f"{where}={value} is not allowed: a config may only build the model's "
                        "own module classes (the sam2_core.model targets of "
                        "sam2_core/configs/model/*.yaml); remove or correct that override or "
                        "config value"
                    )
            else:
                check_targets(value, path=where)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_targets(value, path=f"{path}.{i}" if path else str(i))


def _apply_overrides(cfg: Any, overrides: Sequence[str] | Mapping[str, Any] | None) -> Any:
    from omegaconf import OmegaConf

    if not overrides:
        return cfg
    if isinstance(overrides, Mapping):
        return OmegaConf.merge(cfg, OmegaConf.create(dict(overrides)))
    # Hydra-style "a.b=c", "+a.b=c", "++a.b=c"; keys are relative to the model node.
    dotlist = [o.lstrip("+").removeprefix("model.") for o in overrides]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))


def load_model_config(
    name: str,
    *,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    checkpoint_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The model config node of ``name`` as a plain dict (overrides applied, targets mapped).

    ``checkpoint_overrides`` (dotlist) are applied last: what a released checkpoint's file
    requires of the architecture (SAM 2.0 flags, :data:`sam2_core.model.released.SAM2_0_OVERRIDES`).
    """
    from omegaconf import OmegaConf

    path = config_path(name)
    cfg = OmegaConf.load(path)
    # Official files are `# @package _global_` with a root `model:` key; ours are group files.
    if "model" in cfg and "_target_" not in cfg:
        cfg = cfg.model
    return finish_model_config(
        cfg, overrides=overrides, checkpoint_overrides=checkpoint_overrides, source=str(path)
    )


def finish_model_config(
    node: Any,
    *,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    checkpoint_overrides: Sequence[str] = (),
    source: str,
) -> dict[str, Any]:
    """A model config node (DictConfig or plain mapping) with overrides applied, non-model keys
    dropped and Meta's targets mapped to ours: what :func:`build_model` instantiates."""
    from omegaconf import OmegaConf

    cfg = node if OmegaConf.is_config(node) else OmegaConf.create(dict(node))
    cfg = _apply_overrides(_apply_overrides(cfg, overrides), list(checkpoint_overrides))
    plain = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(plain, dict) or "_target_" not in plain:
        raise ValueError(f"{source}: not a model config (no _target_ at the model node)")
    for key in _NON_MODEL_KEYS:
        plain.pop(key, None)
    return _map_targets(plain)


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def build_model(
    name: str,
    *,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    mode: str = "eval",
    init_seed: int | None = None,
    checkpoint_sha256: str | None = None,
    checkpoint_overrides: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> SAM2Base:
    """Build a SAM 2.1 model.

    Args:
        name: one of :data:`MODEL_NAMES` or a path to a model YAML (ours or Meta's).
        checkpoint: optional checkpoint path/URL, or a released name (``sam2.1_hiera_tiny``;
            ``released`` = the SAM 2.1 one of this size; fetched once, see
            :mod:`sam2_core.model.released`), loaded strictly (see :func:`load_checkpoint`).
        device: target device; ``"meta"`` builds without allocating (fast; shapes only).
        overrides: config overrides, Hydra dotlist (``["image_encoder.trunk.drop_path_rate=0.1"]``)
            or a nested dict.
        mode: ``"eval"`` (default, like Meta's ``build_sam2``) or ``"train"``.
        init_seed: seed for the random initialisation (taken from a private RNG stream, so the
            global RNG is untouched); ``None`` draws from the global RNG. Makes a model built
            without a checkpoint reproducible, e.g. ``sam2kf evaluate --model tiny``.
        checkpoint_sha256: optional pinned digest of the checkpoint file (refused if different).
        checkpoint_overrides: architecture flags a checkpoint file needs, applied after
            ``overrides`` (a released SAM 2.0 ``checkpoint`` adds its own automatically).
        config: an already composed model node (the training config's ``model``): used as it
            is instead of reading ``name``'s YAML again (``name`` then only names the model).

    Returns:
        the :class:`SAM2Base` on ``device``.
    """
    from hydra.utils import instantiate

    from sam2_core.model.released import lookup, resolve_checkpoint

    # A released name's architecture flags (a lookup: nothing is fetched before the config passed)
    release = lookup(checkpoint, model=name) if checkpoint is not None else None
    needs = (*checkpoint_overrides, *(release.overrides if release else ()))
    if config is None:
        cfg = load_model_config(name, overrides=overrides, checkpoint_overrides=needs)
    else:
        cfg = finish_model_config(
            config, overrides=overrides, checkpoint_overrides=needs, source=f"model {name}"
        )
    check_targets(cfg)  # before instantiate imports or calls anything (no code from data)
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint, model=name, sha256=checkpoint_sha256).path
    dev = torch.device(device)
    if dev.type == "meta":
        with torch.device("meta"):
            model = instantiate(cfg, _convert_="partial")
    elif init_seed is None:
        model = instantiate(cfg, _convert_="partial")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = instantiate(cfg, _convert_="partial")
    if not isinstance(model, SAM2Base):
        raise TypeError(f"config {name!r} built {type(model).__name__}, expected SAM2Base")
    if checkpoint is not None:
        if dev.type == "meta":
            raise ValueError("cannot load a checkpoint into a meta-device model")
        load_checkpoint(model, checkpoint)
    if dev.type != "meta":
        model = model.to(dev)
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    model.train(mode == "train")
    return model


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

_DIR_CANDIDATES = ("model.pt", "model_final.pt", "checkpoint.pt", "state.pt")


def _resolve_checkpoint_file(path: str) -> str:
    """A directory (e.g. a training ``step-NNNNNN/``) resolves to the model file inside it."""
    fs, p = storage.get_fs(path)
    if not fs.isdir(p):
        if not fs.exists(p):
            raise CheckpointError(f"checkpoint {path}: file not found")
        return path
    names = storage.listdir(path)
    for cand in _DIR_CANDIDATES:
        if cand in names:
            return storage.join(path, cand)
    pts = [n for n in names if n.endswith((".pt", ".pth", ".safetensors"))]
    if len(pts) == 1:
        return storage.join(path, pts[0])
    raise CheckpointError(
        f"checkpoint directory {path}: expected one of {list(_DIR_CANDIDATES)} or a single "
        f".pt/.safetensors file, found {names}"
    )


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes of DDP (``module.``) and torch.compile (``_orig_mod.``)."""
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file/dir/URL.

    Accepts ``{"model": sd}`` (official and our format), a bare state dict, and
    ``.safetensors``. Uses ``torch.load(weights_only=True)``: no pickled code is executed.
    """
    file = _resolve_checkpoint_file(path)
    try:
        data = storage.read_bytes(file)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {file}: cannot read ({exc})") from exc
    if file.endswith(".safetensors"):
        from safetensors.torch import load as st_load

        return _strip_prefixes(dict(st_load(data)))
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {file}: not a loadable torch checkpoint with weights_only=True ({exc})"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {file}: expected {{'model': state_dict}} or a state dict of tensors"
        )
    return _strip_prefixes({str(k): v for k, v in obj.items()})


def _fmt_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Raise :class:`CheckpointError` unless keys and shapes match ``model`` exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or misshaped):
        return
    parts = [f"checkpoint {source} does not match the model"]
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_fmt_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_fmt_keys(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} mis-shaped key(s): {_fmt_keys(misshaped)}")
    hint = ", ".join(f"{f} -> {n}" for f, n in OFFICIAL_CHECKPOINTS.items())
    parts.append(f"(is it the right model size? official files: {hint})")
    raise CheckpointError("; ".join(parts))


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load a checkpoint into ``model`` strictly (keys and shapes must match exactly).

    Args:
        model: the target model.
        path: file, training checkpoint directory or fsspec URL (see :func:`read_state_dict`).

    Raises:
        CheckpointError: unreadable file, or missing / unexpected / mis-shaped keys (all listed).
    """
    sd = read_state_dict(path)
    check_state_dict(model, sd, source=path)
    model.load_state_dict(sd, strict=True)
    return model


def export_checkpoint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], url: str) -> str:
    """Write ``{"model": state_dict}`` (CPU tensors) atomically to ``url``; returns ``url``.

    The file loads with Meta's ``build_sam2(config, ckpt_path=url)`` and with
    :func:`load_checkpoint`.
    """
    if isinstance(model_or_state_dict, nn.Module):
        sd = model_or_state_dict.state_dict()
    else:
        sd = dict(model_or_state_dict)
    sd = _strip_prefixes(dict(sd))
    cpu_sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    buf = io.BytesIO()
    torch.save({"model": cpu_sd}, buf)
    storage.write_bytes_atomic(url, buf.getvalue())
    return url


def guess_model_name(path: str) -> str | None:
    """Config name for an official checkpoint file name (``sam2.1_hiera_tiny.pt`` -> t)."""
    return OFFICIAL_CHECKPOINTS.get(os.path.basename(path))


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`convert_checkpoint` wrote."""

    model: str
    source: str
    out: str
    num_keys: int
    num_params: int


def convert_checkpoint(*, model: str, src: str, out: str) -> ExportSummary:
    """Validate a checkpoint against a model config and write it in the official format.

    ``src`` may be an official checkpoint, our export, a training checkpoint (file or
    ``step-NNNNNN/`` directory), ``.safetensors`` or a released name (``sam2.1_hiera_tiny``,
    ``released``; see :mod:`sam2_core.model.released`). Keys and shapes are checked strictly against
    ``build_model(model)`` (built on the meta device: no weights are allocated); floating tensors
    are written as float32 like Meta's released files.
    """
    from sam2_core.model.released import resolve_checkpoint

    resolved = resolve_checkpoint(src, model=model)  # a released name is fetched once
    sd = read_state_dict(resolved.path)
    reference = build_model(model, device="meta", overrides=list(resolved.overrides))
    check_state_dict(reference, sd, source=src)
    ordered = {
        k: (sd[k].float() if sd[k].is_floating_point() else sd[k]) for k in reference.state_dict()
    }
    export_checkpoint(ordered, out)
    n_params = sum(p.numel() for p in reference.parameters())
    return ExportSummary(
        model=model, source=src, out=out, num_keys=len(ordered), num_params=n_params
    )
