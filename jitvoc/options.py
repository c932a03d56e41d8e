"""Command-line value types shared by the commands and the benchmarks: argparse refuses a bad
value before any work, naming the option (`error: argument --files: must be at least 1, got
0`, exit status 2)."""
from __future__ import annotations

import argparse
import math


def count(text: str) -> int:
    """The type of an integer option of at least 1 (files, rounds, steps)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """The type of a finite float option above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def counts(text: str) -> list[int]:
    """The type of a comma-separated list of integers of at least 1 ('' for none)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(
            f"must be integers of at least 1 separated by commas, got {text!r}")
    return [int(p) for p in parts]
