"""images/*.Dockerfile: parsed (no Docker engine here) and checked for what a build needs and
what a security review asks: COPY sources exist and are in the build context, pinned bases,
multi-stage with no build tools in the final stage, numeric non-root USER, sam2kf entry point."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sam2_core import __version__, image_ref
from sam2_core.launch.images import IMAGE_REPO_ENV, ImageSettings
from sam2_core.launch.pods import RUN_AS_USER

from .k8s_helpers import REPO

DOCKERFILES = {
    "train": REPO / "images" / "train.Dockerfile",
    "data": REPO / "images" / "data.Dockerfile",
}
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|pip install[^&]*\bbuild==)"
)


def _stages(path: Path) -> list[dict[str, Any]]:
    """[{"from": image, "name": alias, "instructions": [(INSTR, value), ...]}, ...]"""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(path))
    stages: list[dict[str, Any]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            parts = ins["value"].split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "name": name, "instructions": []})
        elif stages and ins["instruction"] != "COMMENT":
            stages[-1]["instructions"].append((ins["instruction"], ins["value"]))
    return stages


def _dockerignore_allows(rel: str) -> bool:
    """Docker's rule: the last matching .dockerignore pattern wins; '!' re-includes."""
    included = True
    lines = (REPO / ".dockerignore").read_text().splitlines()
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        pat = pattern.replace("**/", "*").replace("**", "*")
        if any(fnmatch.fnmatch(c, pat) for c in candidates):
            included = negate
    return included


@pytest.fixture(params=sorted(DOCKERFILES))
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_copy_sources_exist_and_are_in_the_build_context(flavour: str) -> None:
    stages = _stages(DOCKERFILES[flavour])
    names = [s["name"] for s in stages]
    for i, stage in enumerate(stages):
        for instr, value in stage["instructions"]:
            if instr not in ("COPY", "ADD"):
                continue
            args = value.split()
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if src_stage:
                assert src_stage in names[:i], f"COPY --from={src_stage}: no earlier stage"
                continue
            assert instr == "COPY", "use COPY, not ADD"
            for src in paths[:-1]:
                assert (REPO / src).exists(), f"{flavour}: COPY source {src} does not exist"
                assert _dockerignore_allows(src), f"{flavour}: {src} is excluded by .dockerignore"


def test_base_images_are_pinned(flavour: str) -> None:
    for stage in _stages(DOCKERFILES[flavour]):
        image = stage["from"]
        assert "@sha256:" in image or re.search(r":[^/]*\d", image), f"{image} not pinned"
        assert not image.endswith(":latest")


def test_multi_stage_and_final_stage_has_no_build_tools(flavour: str) -> None:
    stages = _stages(DOCKERFILES[flavour])
    assert len(stages) >= 2
    final = stages[-1]
    for instr, value in final["instructions"]:
        if instr == "RUN":
            assert not BUILD_TOOLS.search(value), f"build tooling in the final stage: {value}"
            if "pip install" in value:
                # nothing may be compiled in the final stage
                assert "--only-binary=:all:" in value or "--no-index" in value, value
                assert "--no-cache-dir" in value
    # the wheel is built in an earlier stage from the package sources
    builder_runs = " ".join(v for s in stages[:-1] for i, v in s["instructions"] if i == "RUN")
    assert "python -m build --wheel" in builder_runs


def test_final_stage_runs_as_numeric_non_root_user(flavour: str) -> None:
    final = _stages(DOCKERFILES[flavour])[-1]
    users = [v for i, v in final["instructions"] if i == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    assert int(uid) == RUN_AS_USER and (not gid or int(gid) != 0)


def test_entrypoint_is_the_installed_console_script(flavour: str) -> None:
    final = _stages(DOCKERFILES[flavour])[-1]
    (entry,) = [json.loads(v) for i, v in final["instructions"] if i == "ENTRYPOINT"]
    assert entry == ["sam2kf"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sam2kf"] == "sam2_core.cli:main"
    installed = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
    }
    assert installed.get("sam2kf") == "sam2_core.cli:main"
    runs = " ".join(v for i, v in final["instructions"] if i == "RUN")
    assert "sam2kf --version" in runs and "torchrun --help" in runs  # smoke-checked at build


def test_version_labels_and_tags(flavour: str) -> None:
    from dockerfile_parse import DockerfileParser

    path = DOCKERFILES[flavour]
    parser = DockerfileParser(str(path))
    assert parser.labels["org.opencontainers.image.version"] == __version__
    text = path.read_text()
    assert f"ARG VERSION={__version__}" in text
    # the build command in the header tags exactly what the manifests and components pull
    assert f"-t {image_ref(flavour=flavour)}" in text
    assert f"docker push {image_ref(flavour=flavour)}" in text


def test_torch_is_pinned() -> None:
    cuda = _stages(DOCKERFILES["train"])[-1]["from"]
    assert cuda.startswith(("pytorch/pytorch:2.13.0-cuda", "nvidia/cuda:"))
    for path in DOCKERFILES.values():
        assert "torch==2.13.0" in path.read_text()


def test_dockerignore_keeps_the_context_small() -> None:
    for excluded in (".venv", ".git", "tests", "sam2kf_outputs", "sam2_core/__pycache__/x.pyc"):
        assert not _dockerignore_allows(excluded), excluded
    for included in ("pyproject.toml", "sam2_core/cli.py", "components", "pipelines"):
        assert _dockerignore_allows(included), included


def test_dockerfiles_build_from_any_checkout(flavour: str) -> None:
    """No git tag needed: the header documents the build script, never a tag checkout."""
    text = DOCKERFILES[flavour].read_text()
    assert "git checkout" not in text
    assert f"images/build.sh --only {flavour}" in text


def _build_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAM2KF_IMAGE_")}
    return subprocess.run(
        ["bash", str(REPO / "images" / "build.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_build_script_tags_both_images_with_the_package_version() -> None:
    proc = _build_sh()
    assert proc.returncode == 0, proc.stderr
    builds = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ docker build")]
    assert len(builds) == 2
    for flavour, line in zip(("data", "train"), builds, strict=True):
        assert f"-f {REPO}/images/{flavour}.Dockerfile" in line
        assert f"--build-arg VERSION={__version__}" in line
        assert f"-t {image_ref(flavour=flavour)} {REPO}" in line
    assert "docker push" not in proc.stdout


def test_build_script_uses_the_same_image_setting_as_compile() -> None:
    repo = "registry.example.com/team/sam2-kubeflow"
    proc = _build_sh("--tag", "abc", "--push", env={IMAGE_REPO_ENV: repo})
    assert proc.returncode == 0, proc.stderr
    settings = ImageSettings.from_env(repository=repo, tag="abc")
    for flavour in ("data", "train"):
        assert f"-t {settings.ref(flavour)} " in proc.stdout
        assert f"+ docker push {settings.ref(flavour)}" in proc.stdout
    only = _build_sh("--only", "train", "--repo", repo)
    assert "train.Dockerfile" in only.stdout and "data.Dockerfile" not in only.stdout


@pytest.mark.parametrize(
    "args", [("--tag", "latest"), ("--repo", "r.io/x:1"), ("--only", "gpu"), ("--bogus",)]
)
def test_build_script_refuses_bad_arguments_in_one_line(args: tuple[str, ...]) -> None:
    proc = _build_sh(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "build.sh:" in proc.stderr
