"""Run the compiled pipeline end to end on this machine with ``kfp.local`` (no cluster).

The same pipeline function as on Kubernetes, with the ``local`` launcher backend: training runs
as local torchrun processes. ``kfp.local``'s SubprocessRunner executes every lightweight
component in a subprocess of this interpreter (``use_venv=False``: no package installs) and
ignores the kfp-kubernetes settings. Artifacts land under ``<out>/kfp/<run>/<task>/``.
"""

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.finetune import finetune_pipeline


@dataclass
class LocalRunConfig:
    out: str = "./sam2kf-local"
    raw_uri: str = ""  # "" = generate the built-in demo data into <out>/raw
    registry_uri: str = ""  # "" = <out>/registry
    demo_videos: int = 6
    demo_frames: int = 24
    model_name: str = "tiny"
    experiment: str = "smoke"
    overrides: str = ""
    nproc_per_node: int = 2
    num_nodes: int = 1
    max_steps: int = 0  # 0 = the experiment's default
    dataset_name: str = "demo"
    dataset_version: str = "auto"
    init_checkpoint: str = "champion"
    min_jf_gain: float = 0.0
    eval_max_videos: int = 0
    val_fraction: float = 0.34
    data_partitions: int = 1  # extract + shard fan out over this many partitions
    extra: dict[str, Any] = field(default_factory=dict)
    #: False: one line per step (a failed step's whole log); True: kfp.local's own output
    verbose: bool = False


@dataclass
class LocalRunResult:
    run_dir: str
    seconds: float
    artifacts: dict[str, dict[str, Any]]  # task/artifact -> {"url", "metadata"}
    parameters: dict[str, dict[str, Any]]  # task -> output parameters
    registry_uri: str
    champion: dict[str, Any] | None


def run_local(cfg: LocalRunConfig) -> LocalRunResult:
    """Generate demo data if needed, run the pipeline through kfp.local, collect the outputs."""
    from kfp import local

    from sam2_core.registry import Registry

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw = cfg.raw_uri
    if not raw:
        from sam2_core.data.prep.demo import write_demo_dataset

        raw = str(out / "raw")
        # Deterministic: asking for more videos later adds new ones and rewrites the old ones
        # byte for byte, which is how the demo shows incremental (seen-video) extraction.
        if len(list(Path(raw).glob("*.mp4"))) < cfg.demo_videos:
            write_demo_dataset(dst=raw, num_videos=cfg.demo_videos, num_frames=cfg.demo_frames)
    registry = cfg.registry_uri or str(out / "registry")
    root = out / "kfp"
    root.mkdir(exist_ok=True)
    before = set(os.listdir(root))
    # CPU only, so the two local torchrun processes never fight over a GPU they do not have.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    args: dict[str, Any] = {
        "raw_uri": raw,
        "registry_uri": registry,
        "dataset_name": cfg.dataset_name,
        "dataset_version": cfg.dataset_version,
        "model_name": cfg.model_name,
        "init_checkpoint": cfg.init_checkpoint,
        "experiment": cfg.experiment,
        "overrides": cfg.overrides,
        "num_nodes": cfg.num_nodes,
        "nproc_per_node": cfg.nproc_per_node,
        "gpus_per_process": 0,
        "max_steps": cfg.max_steps,
        "min_jf_gain": cfg.min_jf_gain,
        "launcher_backend": "local",
        "val_fraction": cfg.val_fraction,
        "eval_max_videos": cfg.eval_max_videos,
        "data_partitions": cfg.data_partitions,
        **cfg.extra,
    }
    t0 = time.perf_counter()
    quiet = StepLines(sys.stdout.write) if not cfg.verbose else None
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        # base_image is ignored by the subprocess runner; its "no python in image name" note is noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        if quiet is not None:
            # kfp.local prints everything (its log handler and the steps' output) to sys.stdout.
            stack.enter_context(contextlib.redirect_stdout(quiet))
            stack.callback(quiet.close)
            root_logger = logging.getLogger()
            root_logger.addFilter(_drop_workspace_note)
            stack.callback(root_logger.removeFilter, _drop_workspace_note)
        finetune_pipeline(**args)
    seconds = time.perf_counter() - t0
    new = sorted(set(os.listdir(root)) - before)
    if not new:
        raise RuntimeError(f"kfp.local wrote no run folder under {root}")
    run_dir = root / new[-1]
    artifacts, params = collect_outputs(run_dir)
    champ = Registry(registry).champion()
    return LocalRunResult(
        str(run_dir), seconds, artifacts, params, registry, champ.to_dict() if champ else None
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_OWN = re.compile(r"^\s*\[(extract|shard|train|evaluate|promote|data)\] (.*)$")


def _drop_workspace_note(record: logging.LogRecord) -> bool:
    """kfp.local's "Cleaned up workspace: /tmp/kfp-workspace-..." is noise in quiet mode."""
    return not record.getMessage().startswith("Cleaned up workspace")


class StepLines(io.TextIOBase):
    """A stdout stand-in that turns kfp.local's output into one line per finished step.

    kfp.local echoes every step's executor input/output JSON, its own banners and the training
    processes' output (~600 lines for the demo). Kept: the step's own ``[extract]``,
    ``[shard]``, ... messages, joined into the step's line. A failed step's full log is written
    out, so nothing needed to debug it is lost.
    """

    def __init__(self, write: Callable[[str], Any]) -> None:
        self._write = write
        self._partial = ""
        self._task = ""
        self._log: list[str] = []
        self._own: list[str] = []
        self._t0 = time.perf_counter()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        if m := _START.search(line):
            self._task, self._log, self._own = m.group(1), [], []
            self._t0 = time.perf_counter()
            return
        if m := _END.search(line):
            seconds = time.perf_counter() - self._t0
            ok = m.group(2) == "SUCCESS"
            detail = "; ".join(self._own)
            self._write(
                f"[{m.group(1)}] {'done' if ok else m.group(2)} in {seconds:.0f} s"
                + (f": {detail}" if detail else "")
                + "\n"
            )
            if not ok:
                self._write("\n".join(self._log) + "\n")
            self._task = ""
            return
        self._log.append(line)
        if own := _OWN.match(line):
            self._own.append(own.group(2).strip())

    def close(self) -> None:
        if self._partial:
            self._line(_ANSI.sub("", self._partial))
            self._partial = ""
        if self._task and self._log:  # a step that never reported its end: show its log
            self._write("\n".join(self._log) + "\n")
            self._log = []
        super().close()


def collect_outputs(run_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Artifacts and output parameters of every task, from its ``executor_output.json``.

    A task of the data fan-out (kfp.local runs iteration i under ``for-loop-*-iteration-i/``)
    is keyed ``<task>[i]``; partition 0 is also keyed ``<task>`` (with one partition, as before).
    """
    artifacts: dict[str, dict[str, Any]] = {}
    params: dict[str, dict[str, Any]] = {}
    for f in sorted(run_dir.rglob("executor_output.json")):
        task = f.parent.name
        loop = f.parent.parent.name
        if "-iteration-" in loop:
            i = loop.rsplit("-", 1)[-1]
            keys = [f"{task}[{i}]", *([task] if i == "0" else [])]
        else:
            keys = [task]
        for key in keys:
            _collect(f, key, artifacts, params)
    return artifacts, params


def _collect(
    f: Path, task: str, artifacts: dict[str, dict[str, Any]], params: dict[str, dict[str, Any]]
) -> None:
    data = json.loads(f.read_text() or "{}")
    params[task] = dict(data.get("parameterValues", {}))
    for name, lst in data.get("artifacts", {}).items():
        for art in lst.get("artifacts", []):
            meta = dict(art.get("metadata", {}))
            artifacts[f"{task}/{name}"] = {
                "url": meta.get("url") or art.get("uri"),
                "metadata": meta,
            }


def report_path(artifacts: dict[str, dict[str, Any]]) -> str:
    """The challenger's real ``report.html`` (the ``report`` artifact is an extensionless copy
    that a browser shows as source)."""
    results = artifacts.get("evaluate-challenger/results", {}).get("url")
    if results:
        html = Path(str(results)) / "report.html"
        if html.exists():
            return str(html)
    return str(artifacts.get("evaluate-challenger/report", {}).get("url", "(not produced)"))


def describe(result: LocalRunResult) -> str:
    """Human-readable list of where every output went."""
    a = result.artifacts

    def url(key: str) -> str:
        return str(a.get(key, {}).get("url", "(not produced)"))

    model_meta = a.get("train-model/model", {}).get("metadata", {})
    ch = a.get("evaluate-challenger/metrics", {}).get("metadata", {})
    champ_eval = a.get("evaluate-champion/metrics", {}).get("metadata", {})

    def num(meta: dict[str, Any], key: str) -> str:
        value = meta.get(key, "-")
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    promoted = result.parameters.get("promote-model", {}).get("Output")
    new_videos = result.parameters.get("commit-shards", {}).get("Output")
    parts = sum(1 for k in result.parameters if k.startswith("extract-frames["))
    lines = [
        f"pipeline finished in {result.seconds:.0f} s; run folder {result.run_dir}",
        f"  new videos             {new_videos}"
        + (
            "  (nothing new since the last version: stopped after extract + commit)"
            if new_videos == 0
            else ""
        ),
        f"  frames (extract)       {url('extract-frames/frames')}"
        + (f"  (partition 0 of {parts})" if parts > 1 else ""),
        f"  shards                 {url('commit-shards/shards')}",
        f"  training output        {url('train-model/model')}",
        f"    checkpoints          {model_meta.get('checkpoints', '-')}",
        f"    TensorBoard logs     {model_meta.get('tensorboard', '-')}",
        f"    exported model       {model_meta.get('model_uri', '-')}",
        f"  challenger J&F         {num(ch, 'J&F')}  (J {num(ch, 'J')}, F {num(ch, 'F')})",
        f"  champion J&F (before)  {num(champ_eval, 'J&F')}  (-1 = no champion yet)",
        f"  evaluation results     {url('evaluate-challenger/results')}",
        f"  HTML report            {report_path(a)}",
        f"  promotion              {'promoted' if promoted else 'not promoted'}"
        f"  ({url('promote-model/decision')})",
        f"  registry               {result.registry_uri} (champion.json, history/)",
    ]
    if result.champion:
        c = result.champion
        lines.append(
            f"  champion now           run {c['run_id']} J&F {c['jf']:.3f} {c['model_uri']}"
        )
    lines.append(
        f"  TensorBoard:           tensorboard --logdir {model_meta.get('tensorboard', '')}"
    )
    return "\n".join(lines)
