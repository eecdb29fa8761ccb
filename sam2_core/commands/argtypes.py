"""argparse ``type=`` checks for ranges, so an out-of-range value is refused by the flag's name
(``argument --every: must be an integer >= 1, got '0'``) before any work starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer ``>= low``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    check.__name__ = f"int>={low}"
    return check


def int_within(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``low..high``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {text!r}")
        return value

    check.__name__ = f"int{low}..{high}"
    return check


def float_within(
    low: float, high: float = math.inf, *, low_open: bool = False
) -> Callable[[str], float]:
    """A finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]" if math.isfinite(high) else None
    want = (bounds and f"a number in {bounds}") or f"a number {'>' if low_open else '>='} {low:g}"

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    check.__name__ = "float"
    return check


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
