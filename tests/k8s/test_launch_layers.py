"""Import rules of the launch and workflow layers (the launch/workflow side of the house rules):
launch imports only storage and itself; the workflow imports downward only and is imported by
the components and the CLI alone; no private names cross modules; no importlib or guarded
imports of the project's own code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = sorted((REPO / "sam2_core" / "launch").glob("*.py"))
OWN = ("sam2_core", "components", "pipelines")
#: What the launch package may import from the project (the package root holds image_ref).
LAUNCH_MAY_IMPORT = ("sam2_core", "sam2_core.storage", "sam2_core.launch")
TOP = [
    REPO / "sam2_core" / "workflow.py",
    REPO / "sam2_core" / "cli.py",
    *sorted((REPO / "sam2_core" / "commands").glob("*.py")),
    *sorted((REPO / "components").glob("*.py")),
    *sorted((REPO / "pipelines").glob("*.py")),
]


def _imports(path: Path) -> list[tuple[str, list[str], ast.AST]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node))
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", LAUNCH, ids=_rel)
def test_launch_imports_only_storage_and_itself(path: Path) -> None:
    for module, _, _ in _imports(path):
        if module.split(".")[0] in OWN:
            assert module in LAUNCH_MAY_IMPORT or module.startswith("sam2_core.launch."), (
                f"{_rel(path)} imports {module}"
            )


@pytest.mark.parametrize("path", [*LAUNCH, *TOP], ids=_rel)
def test_no_private_names_importlib_or_guarded_own_imports(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for module, names, _ in _imports(path):
        assert module != "importlib", f"{_rel(path)} imports importlib"
        if module.split(".")[0] in OWN:
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{_rel(path)} imports private {private} from {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for inner in node.body:
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    mods = (
                        [a.name for a in inner.names]
                        if isinstance(inner, ast.Import)
                        else [inner.module or ""]
                    )
                    assert not any(m.split(".")[0] in OWN for m in mods), (
                        f"{_rel(path)} guards an import of its own code"
                    )


def test_only_components_and_cli_import_the_workflow() -> None:
    allowed = {REPO / "components", REPO / "sam2_core" / "commands"}
    for path in [*(REPO / "sam2_core").rglob("*.py"), *(REPO / "pipelines").glob("*.py")]:
        if any(a in path.parents for a in allowed):
            continue
        for module, names, _ in _imports(path):
            assert module != "sam2_core.workflow" and not (
                module == "sam2_core" and "workflow" in names
            ), f"{_rel(path)} imports the workflow"
