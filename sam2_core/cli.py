"""``sam2kf`` command line: one subcommand per pipeline step plus cluster helpers.

Each subcommand lives in its own module under :mod:`sam2_core.commands` and exposes
``add_arguments(parser)`` and ``run(args)``; those modules import their heavy dependencies
inside ``run``, so ``sam2kf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from sam2_core import __version__
from sam2_core.commands import (
    compile as compile_command,
)
from sam2_core.commands import (
    demo_data,
    evaluate,
    export,
    extract,
    promote,
    retrain,
    schedule,
    shard,
    submit,
    train,
)
from sam2_core.commands import (
    run as run_command,
)

#: (subcommand, module under sam2_core.commands, one-line help)
COMMANDS: list[tuple[str, ModuleType, str]] = [
    ("extract", extract, "decode SA-V videos into JPEG frame folders (every Nth frame)"),
    ("shard", shard, "pack frames and masks into Parquet shards on any fsspec URL"),
    ("train", train, "fine-tune SAM 2.1 (Hydra overrides, torchrun-aware)"),
    ("evaluate", evaluate, "semi-supervised VOS inference and J&F, with an HTML report"),
    ("promote", promote, "champion/challenger promotion in the model registry"),
    ("export", export, "write a model in Meta's official {'model': state_dict} format"),
    ("demo-data", demo_data, "write the built-in SA-V-format demo dataset"),
    ("run", run_command, "run the whole fine-tuning pipeline (locally with --local)"),
    ("compile", compile_command, "compile the pipeline to KFP YAML (or Pipeline CRs)"),
    ("submit", submit, "start a pipeline run on a KFP installation"),
    ("schedule", schedule, "create a recurring KFP run for scheduled retraining"),
    ("retrain", retrain, "scheduled retraining without KFP (the manifests' CronJob runs it)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2kf",
        description="sam2-kubeflow: fine-tune SAM 2.1 on your own videos, locally or on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"sam2kf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(command_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 2
    rc = args.command_module.run(args)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
