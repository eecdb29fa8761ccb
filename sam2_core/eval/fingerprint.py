"""What an evaluation's results depend on, as one hash: the key of its resume markers.

A finished video's marker (``_progress/<video>.json``) is only reused by a run with the same
fingerprint: same weights (a sha256 over every tensor of the state dict: names, dtypes, shapes
and bytes, so it does not matter whether they came from a file, a name or a module), same
model and predictor settings (their plain attributes, e.g. ``fill_hole_area``) and same
evaluation settings (prompt, layout, skip_first_and_last, ...). Anything else would report
one model's predictions under another's name.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

#: key of the fingerprint in a progress marker, and of the settings it was made from
FINGERPRINT_KEY = "fingerprint"
SETTINGS_KEY = "settings"


def weights_sha256(module: Any) -> str:
    """sha256 over a module's state dict (sorted names, dtype, shape and raw bytes per tensor).

    Cost: one pass over the weights (about 1 s per GB on a CPU core); GPU tensors are copied
    to the host one at a time.
    """
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        # bytes via uint8 view: bf16 and other dtypes numpy lacks are hashed as they are.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON data that says the same thing in every process."""
    if isinstance(value, float):
        return not math.isnan(value)
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def plain_settings(obj: Any, *, depth: int = 1) -> dict[str, Any]:
    """Public plain attributes of an object (config flags like ``fill_hole_area``).

    Attributes holding other plain objects (not modules, not tensors) are followed ``depth``
    levels (the predictor keeps its post-processing settings in a helper object).
    """
    import torch
    from torch import nn

    out: dict[str, Any] = {}
    for key, value in sorted(getattr(obj, "__dict__", {}).items()):
        if key.startswith("_") or key == "training":
            continue
        if _plain(value):
            out[key] = list(value) if isinstance(value, tuple) else value
        elif (
            depth > 0
            and hasattr(value, "__dict__")
            and not isinstance(value, (nn.Module, torch.Tensor, type))
            and not callable(value)
        ):
            sub = plain_settings(value, depth=depth - 1)
            if sub:
                out[key] = sub
    return out


def evaluation_settings(*, model: Any, predictor: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything the scores of a video depend on, as plain JSON data.

    Args:
        model: the ``nn.Module`` evaluated (in the mode it is evaluated in).
        predictor: the video predictor wrapping it (its settings count, not its class: a test
            may wrap the same predictor to inject faults).
        settings: the evaluation's own options (prompt, layout, skip_first_and_last, ...).
    """
    return {
        "weights_sha256": weights_sha256(model),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_settings": plain_settings(model),
        "predictor_settings": plain_settings(predictor),
        "evaluation": settings,
    }


def fingerprint(settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of :func:`evaluation_settings`."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def differences(old: Any, new: dict[str, Any]) -> list[str]:
    """Top-level names (``evaluation.prompt``, ``weights_sha256``, ...) whose values differ."""
    if not isinstance(old, dict):
        return ["(no fingerprint: written by an older version)"]
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(key)
    return diffs
