"""Checkpoint loading (strict, weights_only) and export in Meta's ``{"model": state_dict}`` format."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from sam2_core.model import CheckpointError, build_model, export_checkpoint, load_checkpoint
from sam2_core.model.build import read_state_dict


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("tiny").state_dict()


def _save(path: Path, obj: object) -> str:
    torch.save(obj, path)
    return str(path)


def test_export_reload_round_trip(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    out = export_checkpoint(tiny_sd, str(tmp_path / "sub" / "model.pt"))
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert list(raw) == ["model"] and list(raw["model"]) == list(tiny_sd)
    fresh = build_model("tiny")
    load_checkpoint(fresh, out)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, tiny_sd[k]), k
    assert not list(tmp_path.glob("sub/*.tmp-*"))  # atomic write leaves no temp file
    # Also via build_model(checkpoint=...) and from a training step directory.
    step = tmp_path / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    # The trainer's layout: step-NNNNNN/state.pt = {"model": sd, "optimizer": ..., "step": ...}.
    _save(step / "state.pt", {"model": fresh.state_dict(), "optimizer": {"state": {}}, "step": 10})
    again = build_model("tiny", checkpoint=str(step))
    assert torch.equal(again.no_obj_ptr, fresh.no_obj_ptr)


def test_missing_unexpected_and_misshaped_keys_are_listed(
    tmp_path: Path, tiny_sd: dict[str, torch.Tensor]
) -> None:
    bad = dict(tiny_sd)
    del bad["no_mem_embed"]
    del bad["obj_ptr_proj.layers.2.bias"]
    bad["extra.weight"] = torch.zeros(3)
    bad["maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    path = _save(tmp_path / "bad.pt", {"model": bad})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(build_model("tiny"), path)
    msg = str(exc.value)
    assert path in msg
    assert "2 missing key(s): no_mem_embed, obj_ptr_proj.layers.2.bias" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "maskmem_tpos_enc (checkpoint (7, 1, 1, 64) vs model (7, 1, 1, 16))" in msg


def test_wrong_size_and_unsafe_or_missing_files(
    tmp_path: Path, tiny_sd: dict[str, torch.Tensor]
) -> None:
    path = _save(tmp_path / "tiny.pt", {"model": tiny_sd})
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_checkpoint(build_model("tiny", overrides={"num_maskmem": 5}), path)
    # Pickled objects other than tensors are refused by weights_only=True.
    path = _save(tmp_path / "evil.pt", {"model": tiny_sd, "cfg": io.StringIO("x")})
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(str(tmp_path / "nope.pt"))


def test_ddp_prefix_is_stripped(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    path = _save(tmp_path / "ddp.pt", {f"module.{k}": v for k, v in tiny_sd.items()})
    assert list(read_state_dict(path)) == list(tiny_sd)


def cli_main(argv: list[str]) -> int:
    """``sam2kf export`` as the CLI runs it: a failure is one line and an exit status."""
    from sam2_core.cli import main

    assert argv[0] == "export"
    return main(argv)


def test_sam2kf_export(
    tmp_path: Path, tiny_sd: dict[str, torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    src = _save(
        tmp_path / "train.pt", {"model": {k: v.to(torch.bfloat16) for k, v in tiny_sd.items()}}
    )
    out = tmp_path / "exported.pt"
    assert cli_main(["export", "--model", "tiny", "--checkpoint", src, "--out", str(out)]) == 0
    assert "371 tensors" in capsys.readouterr().out
    sd = torch.load(out, weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for v in sd.values())
    rc = cli_main(
        [
            "export",
            "--model",
            "sam2.1_hiera_t",
            "--checkpoint",
            src,
            "--out",
            str(tmp_path / "x.pt"),
        ]
    )
    assert rc == 2  # a checkpoint of another model size is bad input
    assert "does not match the model" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_init_seed_is_reproducible_and_leaves_global_rng() -> None:
    import torch

    from sam2_core.model.build import build_model

    before = torch.random.get_rng_state()
    a = build_model("tiny", init_seed=3)
    b = build_model("tiny", init_seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
