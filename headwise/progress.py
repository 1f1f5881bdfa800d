"""Progress bars for long work (tqdm), with one switch to turn them off, as in transformers and datasets."""

from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm.auto import tqdm

__all__ = ["disable_progress_bars", "enable_progress_bars", "progress", "progress_bar", "progress_enabled"]

T = TypeVar("T")
_enabled = True


def disable_progress_bars() -> None:
    """Hide headwise's progress bars (e.g. in scripts that log to a file; the CLI's ``--quiet``)."""
    global _enabled
    _enabled = False


def enable_progress_bars() -> None:
    global _enabled
    _enabled = True


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """``iterable`` with a transient tqdm bar named ``desc`` (none when disabled)."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not _enabled)


def progress_enabled() -> bool:
    return _enabled


def progress_bar(total: int, desc: str) -> tqdm:
    """A manual transient bar of ``total`` steps (count, rate and time left), for loops tqdm cannot wrap."""
    return tqdm(total=total, desc=desc, leave=False, disable=not _enabled)
