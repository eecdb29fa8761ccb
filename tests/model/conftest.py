"""Fixtures shared by the model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sam2_core.model import SAM2Base
from sam2_core.model.build import build_model


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors, and the test machine's cores are shared (2 threads
    under load are ~10x slower); float32 results stay well within the tolerances."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def tiny(golden: Path) -> SAM2Base:
    """The tiny model with the golden reference weights."""
    return build_model("tiny", checkpoint=str(golden / "tiny" / "state_dict.safetensors"))
