"""``sam2kf`` command line: one subcommand per pipeline step plus cluster helpers.

Each subcommand lives in its own module under :mod:`sam2_core.commands` and exposes
``add_arguments(parser)`` and ``run(args)``; those modules import their heavy dependencies
inside ``run``, so ``sam2kf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

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
from sam2_core.commands.errors import EXIT_BAD_INPUT, classify, one_line
from sam2_core.commands.secrets import MaskSecrets, mask

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


#: subcommand -> its parser, filled by :func:`build_parser` (for errors in its own name)
SUBPARSERS: dict[str, argparse.ArgumentParser] = {}


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``sam2kf <cmd>: <problem>; see sam2kf <cmd> --help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {one_line(message)}; see `{self.prog} --help`\n")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (tests and callers may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: it flushes the old (maybe closed) stream
        super().emit(record)


def _quiet_urllib3(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("urllib3") and record.levelno < logging.ERROR)


def _configure_logging(*, verbose: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _StderrHandler):
            root.removeHandler(h)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecrets())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # Retries against an unreachable host and kfp's client-version note are noise before
        # the one-line error (or the run id); --verbose shows them. A filter, not a level:
        # kfp's API client resets the urllib3 logger's level when it connects.
        handler.addFilter(_quiet_urllib3)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp\.")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sam2kf",
        description="sam2-kubeflow: fine-tune SAM 2.1 on your own videos, locally or on Kubernetes.",
        epilog="exit status: 0 ok, 2 bad input (one line names the input and the fix), 1 the job "
        "failed; promote: 3 champion kept, 4 lost a promotion race. --debug shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"sam2kf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure (or SAM2KF_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        SUBPARSERS[name] = p
        module.add_arguments(p)
        # Also accepted after the subcommand (`sam2kf train --debug ...`).
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        p.set_defaults(command_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; failures end in one stderr line and an exit status (see errors)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            owner = SUBPARSERS.get(args.command or "", parser)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:
        if e.code in (0, None):
            raise
        return int(e.code) if isinstance(e.code, int) else EXIT_BAD_INPUT
    _configure_logging(verbose=args.verbose)
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    debug = bool(args.debug) or os.environ.get("SAM2KF_DEBUG", "") not in ("", "0")
    try:
        rc = args.command_module.run(args)
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            return int(e.code or 0)
        return _fail(e, args, debug=debug)
    except (Exception, KeyboardInterrupt) as e:
        return _fail(e, args, debug=debug)
    return int(rc or 0)


def _fail(exc: BaseException, args: argparse.Namespace, *, debug: bool) -> int:
    status, message = classify(exc, command=args.command, host=getattr(args, "host", None))
    prefix = f"sam2kf {args.command}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    sys.stdout.flush()
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(mask(prefix + message), file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
