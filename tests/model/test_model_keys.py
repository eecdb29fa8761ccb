"""State-dict compatibility: keys, order and shapes equal the official SAM 2.1 checkpoints.

References: ``../shared/golden/keys/<name>.tsv`` (dumped from Meta's ``build_sam2``) and
``tiny/keys.tsv``. Models are built on the meta device (no weights allocated: fast).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sam2_core.model import MODEL_NAMES, SAM2Base, build_model

PARAMS = {
    "sam2.1_hiera_t": 38_962_498,
    "sam2.1_hiera_s": 46_060_354,
    "sam2.1_hiera_b+": 80_850_178,
    "sam2.1_hiera_l": 224_446_642,
    "tiny": 1_701_906,
}


def _reference(golden: Path, name: str) -> list[tuple[str, str]]:
    path = golden / "tiny" / "keys.tsv" if name == "tiny" else golden / "keys" / f"{name}.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_keys_and_shapes(golden: Path, name: str) -> None:
    model = build_model(name, device="meta")
    got = [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]
    ref = _reference(golden, name)
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    assert got == ref  # same order too


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count(name: str) -> None:
    model = build_model(name, device="meta")
    assert isinstance(model, SAM2Base)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_official_config_file_builds_our_classes(golden: Path) -> None:
    """Meta's YAML format (``model:`` root, ``sam2.modeling...`` targets) is accepted."""
    model = build_model(str(golden / "tiny" / "config.yaml"), device="meta")
    assert type(model) is SAM2Base
    assert [k for k, _ in _reference(golden, "tiny")] == list(model.state_dict())


def test_overrides_and_unknown_name() -> None:
    model = build_model(
        "tiny", device="meta", overrides=["++model.image_encoder.trunk.drop_path_rate=0.1"]
    )
    assert model.image_encoder.trunk.blocks[-1].drop_path.drop_prob > 0  # type: ignore[union-attr,index]
    model = build_model("tiny", device="meta", overrides={"memory_temporal_stride_for_eval": 2})
    assert model.memory_temporal_stride_for_eval == 2
    with pytest.raises(ValueError, match="unknown model"):
        build_model("sam2.1_hiera_xl", device="meta")
