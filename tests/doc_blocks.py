"""The fenced Python blocks of the docs, and docs/extending.md's method built once per test process (a
method registers under one name once: the docs test and tests/test_extending.py share these classes)."""

import functools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTENDING = REPO / "docs" / "extending.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


@functools.cache
def extending_method() -> dict:
    """The namespace of docs/extending.md's first block (the method's classes), run once."""
    namespace = {"__name__": "docs_extending"}
    exec(compile(python_blocks(EXTENDING)[0], f"{EXTENDING.name} python block 1", "exec"), namespace)
    return namespace
