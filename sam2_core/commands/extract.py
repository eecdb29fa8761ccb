"""`sam2kf extract` (not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "This subcommand is not implemented yet; see the README's Status table."


def run(args: argparse.Namespace) -> int:
    print("sam2kf extract: not implemented yet", file=sys.stderr)
    return 2
