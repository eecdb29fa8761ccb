"""The house rules, checked on the source: imports run downward, no circles, no private names
across modules, no guarded imports of the project's own code, no class built from several mixins.

The layers (lower first; a module may import its own package and any lower layer, never a peer
or a higher one):

=====  =========================================================  ===========================
layer  packages                                                   may not import
=====  =========================================================  ===========================
0      ``sam2_core.storage``, ``sam2_core.download``              anything of the project
1      ``sam2_core.model``, ``sam2_core.data``                    each other
2      ``sam2_core.train``, ``sam2_core.eval``                    each other
2      ``sam2_core.launch``, ``sam2_core.registry``               model, data, train, eval
3      ``sam2_core.workflow``
4      ``components`` (one KFP component per file, each one workflow call)
5      ``pipelines`` (wiring of the components; compile and client helpers)
6      ``sam2_core.commands``, ``sam2_core.cli`` (``sam2kf``: compiles, submits, runs)
=====  =========================================================  ===========================
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_ROOTS = ("sam2_core", "components", "pipelines")

#: (package prefix, layer); the longest matching prefix wins
LAYERS: tuple[tuple[str, int], ...] = (
    ("sam2_core", 0),  # the package's own __init__ (version only)
    ("sam2_core.storage", 0),
    ("sam2_core.download", 0),
    ("sam2_core.model", 1),
    ("sam2_core.data", 1),
    ("sam2_core.train", 2),
    ("sam2_core.eval", 2),
    ("sam2_core.launch", 2),
    ("sam2_core.registry", 2),
    ("sam2_core.workflow", 3),
    ("components", 4),
    ("pipelines", 5),
    ("sam2_core.commands", 6),
    ("sam2_core.cli", 6),
)
#: peers on one layer that stand side by side and must not import each other
SEPARATED: tuple[tuple[str, str], ...] = (
    ("sam2_core.model", "sam2_core.data"),
    ("sam2_core.train", "sam2_core.eval"),
    ("sam2_core.launch", "sam2_core.model"),
    ("sam2_core.launch", "sam2_core.data"),
    ("sam2_core.launch", "sam2_core.train"),
    ("sam2_core.launch", "sam2_core.eval"),
    ("sam2_core.registry", "sam2_core.model"),
    ("sam2_core.registry", "sam2_core.data"),
    ("sam2_core.registry", "sam2_core.train"),
    ("sam2_core.registry", "sam2_core.eval"),
    ("sam2_core.launch", "sam2_core.registry"),
)


#: Finer rules inside the layers: a package (prefix) may import, of the project, only these
#: prefixes (its own package always). model stands on storage and download alone; launch on
#: storage and the package root; inside data, readers import neither prep nor loader, and prep
#: and loader import readers but not each other.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "sam2_core.model": ("sam2_core.storage", "sam2_core.download"),
    "sam2_core.launch": ("sam2_core.storage",),
    "sam2_core.data.readers": ("sam2_core.storage",),
    "sam2_core.data.prep": ("sam2_core.storage", "sam2_core.data.readers"),
    "sam2_core.data.loader": ("sam2_core.storage", "sam2_core.data.readers"),
}
#: Who may import the workflow: the components and the CLI's commands.
WORKFLOW_USERS = ("components", "sam2_core.commands")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for root in PROJECT_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            mods[module_name(path)] = path
    return mods


MODULES = project_modules()


def is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT_ROOTS


def resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    # a package's __init__ is its own package; a module's package is its parent
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(mod: str, path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every project import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_project(alias.name):
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            target = resolve(mod, path, node)
            if not is_project(target):
                continue
            names = [a.name for a in node.names]
            # `from pkg import submodule` imports the submodule
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            for n in subs:
                yield node.lineno, f"{target}.{n}", []
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                yield node.lineno, target, rest


def layer_of(mod: str) -> tuple[str, int]:
    best = ("", -1)
    for prefix, layer in LAYERS:
        if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > len(best[0]):
            best = (prefix, layer)
    assert best[1] >= 0, f"{mod} is on no layer: add it to LAYERS in {__file__}"
    return best


def package_of(mod: str) -> str:
    return layer_of(mod)[0]


def test_every_module_is_on_a_layer() -> None:
    for mod in MODULES:
        layer_of(mod)


def test_imports_run_downward() -> None:
    bad = []
    for mod, path in MODULES.items():
        own_pkg, own_layer = layer_of(mod)
        for line, target, _ in imports_of(mod, path):
            pkg, layer = layer_of(target)
            if pkg == own_pkg or (pkg == "sam2_core" and target == "sam2_core"):
                continue
            up = layer > own_layer
            side = any({own_pkg, pkg} == {a, b} for a, b in SEPARATED)
            if up or side:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target} ({own_pkg} -> {pkg})")
    assert not bad, "imports that run up or sideways:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for _, target, _ in imports_of(mod, path):
            if target in MODULES and target != mod:
                graph[mod].add(target)
    # a package importing its own submodules (re-exports) is not a circle of concepts
    for mod in graph:
        graph[mod] = {t for t in graph[mod] if MODULES[mod].name != "__init__.py"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_no_private_names_across_modules() -> None:
    bad = []
    for mod, path in MODULES.items():
        for line, target, names in imports_of(mod, path):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {target}.{n}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_no_guarded_or_dynamic_imports_of_own_code() -> None:
    bad = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(guards_import(h) for h in node.handlers):
                for sub in node.body:
                    for inner in ast.walk(sub):
                        if isinstance(inner, ast.ImportFrom) and is_project(
                            resolve(mod, path, inner)
                        ):
                            bad.append(f"{path.relative_to(REPO)}:{inner.lineno} try: import")
                        if isinstance(inner, ast.Import) and any(
                            is_project(a.name) for a in inner.names
                        ):
                            bad.append(f"{path.relative_to(REPO)}:{inner.lineno} try: import")
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name in ("import_module", "__import__") and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and is_project(str(arg.value)):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno} {name}({arg.value!r})")
    assert not bad, "guarded or dynamic imports of the project's own code:\n" + "\n".join(bad)


def guards_import(handler: ast.ExceptHandler) -> bool:
    """An ``except`` that would swallow a failed import (ImportError, Exception or bare)."""
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names = {getattr(t, "id", getattr(t, "attr", "")) for t in types}
    return bool(names & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def project_classes() -> dict[str, tuple[str, list[str]]]:
    """Class name -> (module, base names) over the whole project."""
    out: dict[str, tuple[str, list[str]]] = {}
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                ]
                out[f"{mod}.{node.name}"] = (mod, bases)
    return out


def test_no_class_is_assembled_from_several_project_mixins() -> None:
    classes = project_classes()
    short = {full.rsplit(".", 1)[1] for full in classes}
    bad = []
    for full, (_, bases) in classes.items():
        own = [b for b in bases if b in short and b not in ("Protocol",)]
        if len(own) > 1:
            bad.append(f"{full}({', '.join(own)})")
    assert not bad, "classes built from several project classes:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ["train_step", "RecordSource", "FrameOutput", "resolve_device"])
def test_names_that_collided_are_defined_once(name: str) -> None:
    where = []
    for mod, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
                where.append(mod)
    assert len(where) <= 1, f"{name} is defined in {where}"


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def test_packages_import_only_what_they_may() -> None:
    bad = []
    for mod, path in MODULES.items():
        rule = max((p for p in MAY_IMPORT if _under(mod, p)), key=len, default=None)
        if rule is None:
            continue
        allowed = (rule, *MAY_IMPORT[rule])
        for line, target, _ in imports_of(mod, path):
            # the package root holds only the version
            if target != "sam2_core" and not any(_under(target, a) for a in allowed):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target} ({rule})")
    assert not bad, "imports a package may not make:\n" + "\n".join(bad)


def test_only_components_and_commands_import_the_workflow() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line}"
        for mod, path in MODULES.items()
        if mod != "sam2_core.workflow" and not any(_under(mod, u) for u in WORKFLOW_USERS)
        for line, target, _ in imports_of(mod, path)
        if target == "sam2_core.workflow"
    ]
    assert not bad, "the workflow imported from below the components/CLI:\n" + "\n".join(bad)


def test_model_classes_have_one_base() -> None:
    """The model composes: every class in sam2_core.model has at most one base."""
    bad = [
        f"{path.relative_to(REPO)}: {node.name}"
        for mod, path in MODULES.items()
        if _under(mod, "sam2_core.model")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and len(node.bases) > 1
    ]
    assert not bad, bad


def test_launch_and_the_top_floors_do_not_import_importlib() -> None:
    """Engines, workflow, components, pipelines and the CLI load nothing by name."""
    floors = ("sam2_core.launch", "sam2_core.workflow", "sam2_core.commands", "sam2_core.cli")
    bad = []
    for mod, path in MODULES.items():
        if not (
            mod.split(".")[0] in ("components", "pipelines") or any(_under(mod, f) for f in floors)
        ):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if "importlib" in names or any(n.startswith("importlib.") for n in names):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, bad
