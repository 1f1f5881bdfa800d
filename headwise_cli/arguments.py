"""Argument types that reject a bad value while parsing, before torch or a model is loaded."""

from __future__ import annotations

import argparse
import re

__all__ = ["baseline", "fraction", "heads_amount", "non_negative_float", "non_negative_int", "positive_float", "positive_int"]


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = _number(float, text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1 (exclusive), got {text}")
    return value


def heads_amount(text: str) -> float:
    """A fraction of all heads (below 1) or a whole count (the model's size is checked once it is known)."""
    value = positive_float(text)
    if value >= 1 and value != int(value):
        raise argparse.ArgumentTypeError(f"give a fraction below 1 (0.03) or a whole count of heads (8), got {text}")
    return value


_BASELINE = re.compile(r"(zero-shot|few-shot)(?:=(\d+))?")


def baseline(text: str) -> tuple[str, int]:
    """``zero-shot`` or ``few-shot[=K]`` (K demonstrations per query, default 10) as ``(kind, shots)``."""
    match = _BASELINE.fullmatch(text.strip())
    if not match or (match.group(1) == "zero-shot" and match.group(2)):
        raise argparse.ArgumentTypeError(f"give zero-shot or few-shot[=K] (e.g. few-shot=5), got {text!r}")
    shots = int(match.group(2)) if match.group(2) else (10 if match.group(1) == "few-shot" else 0)
    if match.group(1) == "few-shot" and shots < 1:
        raise argparse.ArgumentTypeError(f"few-shot needs at least one demonstration, got {text!r}")
    return match.group(1), shots
