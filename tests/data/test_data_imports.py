"""Import rules of ``sam2_core.data``, read from the source (no module is imported).

readers import neither prep nor loader; prep and loader import readers but not each other;
data imports nothing of model, train, eval or launch; no import circle between data modules;
no private name imported from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "sam2_core" / "data"
#: which sub-packages each sub-package may import (besides itself)
ALLOWED = {"readers": set(), "prep": {"readers"}, "loader": {"readers"}}
OUTSIDE_ALLOWED = {"sam2_core.storage"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(DATA.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    path = DATA.parent.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``sam2_core`` import anywhere in the file
    (``from package import module`` counts as an import of that module)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("sam2_core"):
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub, []) if _is_module(sub) else (node.module, [a.name]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("sam2_core")]
    return out


def _graph() -> dict[str, list[tuple[str, list[str]]]]:
    return {_module_name(p): _imports(p) for p in sorted(DATA.rglob("*.py"))}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else ""


def test_sub_packages_import_downward_only() -> None:
    bad = []
    for mod, imports in _graph().items():
        for target, _ in imports:
            if not target.startswith("sam2_core.data"):
                if target not in OUTSIDE_ALLOWED:
                    bad.append(f"{mod} -> {target}")
                continue
            src, dst = _part(mod), _part(target)
            if src and dst and dst != src and dst not in ALLOWED[src]:
                bad.append(f"{mod} -> {target}")
    assert not bad, "imports against the data layering:\n" + "\n".join(bad)


def test_no_private_names_across_modules() -> None:
    bad = [
        f"{mod} imports {name} from {target}"
        for mod, imports in _graph().items()
        for target, names in imports
        for name in names
        if name.startswith("_") and target != mod
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    graph = {
        mod: {t for t, _ in imports if t.startswith("sam2_core.data") and t != mod}
        for mod, imports in _graph().items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[str] = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph.get(mod, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not circles, "import circles:\n" + "\n".join(circles)
