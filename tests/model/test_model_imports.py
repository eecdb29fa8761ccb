"""The model package stands on the ground floor: it imports nothing of data, train, eval or
launch, no private name of another module, and none of its classes is assembled from mixins."""

from __future__ import annotations

import ast
from pathlib import Path

import sam2_core.model

MODEL_DIR = Path(sam2_core.model.__file__).resolve().parent
ALLOWED = ("sam2_core.model", "sam2_core.storage", "sam2_core.download")


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(MODEL_DIR.rglob("*.py"))]


def test_model_imports_only_itself_and_storage() -> None:
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "sam2_core":
                    names = [f"sam2_core.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("sam2_core") and not name.startswith(ALLOWED):
                    bad.append(f"{path.relative_to(MODEL_DIR)}: {name}")
    assert not bad, bad


def test_no_private_names_across_modules() -> None:
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sam2_core"):
                bad += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


def test_no_mixins() -> None:
    """Every class of the model has at most one base (composition, not a mixin diamond)."""
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and len(node.bases) > 1:
                bad.append(f"{path.name}: {node.name}")
    assert not bad, bad
