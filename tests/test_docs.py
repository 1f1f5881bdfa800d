"""The docs are tested: the README's fenced Python blocks run as a user runs them (the built wheel in a fresh
virtualenv, one script, from a folder outside the repository, the reference data named by $HEADWISE_DATA as
the README says), every fenced Python block of docs/*.md runs (each file's blocks in order, as one script, on
the bundled model), and the architecture tables equal the code's."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from doc_blocks import EXTENDING, REPO, extending_method, python_blocks
from headwise.sites import architectures_table

README = REPO / "README.md"
DOCUMENTS = [README, *sorted((REPO / "docs").glob("*.md"))]

# Prepended to the README's blocks: the headwise they use must be the wheel in the fresh venv, not the checkout.
WHERE_FROM = """\
import pathlib as _pathlib, sys as _sys
import headwise as _headwise
_venv = _pathlib.Path(_sys.prefix).resolve()
assert _pathlib.Path(_headwise.__file__).resolve().is_relative_to(_venv), (
    f"headwise imported from {_headwise.__file__}, not from the fresh venv {_venv}")
del _headwise
"""

# Appended: every headwise package the blocks imported came from the fresh venv too.
REPORT = """
_ours = ("headwise", "headwise_cli", "lofit", "soft_injection", "zerotuning", "interventions")
_outside = sorted(f"{_name}: {_module.__file__}" for _name, _module in list(_sys.modules.items())
                  if _name.split(".")[0] in _ours and getattr(_module, "__file__", None)
                  and not _pathlib.Path(_module.__file__).resolve().is_relative_to(_venv))
assert not _outside, f"imported from outside the fresh venv: {_outside}"
print("README blocks: all ran")
"""


def readme_script() -> str:
    """The README's Python blocks, in order, as one script (the bash blocks are left out: tests/test_cli.py
    covers the shell)."""
    blocks = [f"# ---- README.md python block {n} ----\n{block}" for n, block in enumerate(python_blocks(README), 1)]
    return WHERE_FROM + "\n" + "\n".join(blocks) + REPORT


def readme_shell(data_folder: Path) -> str:
    """The README's shell blocks that run headwise (the set-up blocks, ``pip install`` and ``make``, are left out),
    as one bash script, the data folder filled in where the README says /path/to/data."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
    commands = [block for block in blocks if "pip install" not in block and not re.search(r"^make ", block, re.M)]
    return "set -euo pipefail\n" + "\n".join(commands).replace("/path/to/data", str(data_folder))


def failed_block(script: Path, stderr: str) -> str:
    """Which README block the traceback's last line in the script falls in."""
    lines = [int(n) for n in re.findall(rf'File "{re.escape(str(script))}", line (\d+)', stderr)]
    if not lines:
        return "no line of the script in the traceback"
    headers = [line for line in script.read_text(encoding="utf-8").splitlines()[: lines[-1]]
               if line.startswith("# ---- README.md python block")]
    return headers[-1].strip("# -") if headers else "the check before the first block"


@pytest.fixture(scope="module")
def user_venv(wheel_venv):
    return wheel_venv[1]


def test_the_docs_have_a_page_per_method_and_python_to_run():
    pages = {p.name for p in DOCUMENTS}
    assert {"lofit.md", "soft_injection.md", "zerotuning.md", "architectures.md"} <= pages
    assert len(python_blocks(README)) >= 5


def test_the_readme_pictures_are_committed_small_copies():
    text = README.read_text(encoding="utf-8")
    pictures = [REPO / p for p in re.findall(r"!\[[^\]]*\]\((docs/images/[^)]+\.png)\)", text)]
    assert 2 <= len(pictures) <= 4
    for picture in pictures:
        assert picture.is_file() and picture.stat().st_size < 100_000, picture


@pytest.mark.parametrize("path", [README, REPO / "docs" / "architectures.md"], ids=lambda p: p.name)
def test_architecture_tables_are_generated_from_the_code(path):
    assert architectures_table() in path.read_text(encoding="utf-8"), (
        f"{path.name} drifted from headwise.sites.ARCHITECTURES: paste headwise.sites.architectures_table() into it"
    )


@pytest.mark.slow
def test_the_readme_blocks_run_from_the_installed_wheel_outside_the_repo(user_venv, tmp_path, shared_data):
    user = tmp_path / "user"  # a folder outside the checkout: nothing of the repo's layout is there
    user.mkdir()
    script = user / "readme.py"
    script.write_text(readme_script(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HEADWISE_DATA")}
    env["HEADWISE_DATA"] = str(shared_data)  # as the README says: export HEADWISE_DATA=/path/to/data
    result = subprocess.run([str(user_venv), str(script)], cwd=user, env=env, capture_output=True, text=True,
                            timeout=2400)
    assert result.returncode == 0, (
        f"the README's blocks failed ({failed_block(script, result.stderr)}):\n" + result.stderr[-4000:]
    )
    assert "README blocks: all ran" in result.stdout
    for noise in ("FutureWarning", "DeprecationWarning", "kernels-community", "More Information Needed", "pin_memory"):
        assert noise not in result.stderr, result.stderr[-3000:]  # quiet: no bitsandbytes banner, no deprecations
    # then the shell blocks, with the venv's headwise command, on the files the Python blocks wrote
    env["PATH"] = f"{user_venv.parent}{os.pathsep}{env.get('PATH', '')}"
    shell = subprocess.run(["bash", "-c", readme_shell(shared_data)], cwd=user, env=env, capture_output=True,
                           text=True, timeout=2400)
    assert shell.returncode == 0, f"the README's shell block failed:\n{shell.stdout[-3000:]}\n{shell.stderr[-4000:]}"
    assert "| model | first token accuracy | exact match |" in shell.stdout
    assert "| base model, 10-shot |" in shell.stdout and "| step | work | time | result |" in shell.stdout
    assert len((user / "out" / "cli-si.jsonl").read_text().splitlines()) == 40
    assert (user / "out" / "cli-lofit-merged" / "config.json").is_file() and (user / "out" / "cli-lofit.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOCUMENTS if p != README and python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs(path, tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEADWISE_DATA", str(shared_data))
    namespace = {"__name__": f"docs_{path.stem}"}
    blocks = list(enumerate(python_blocks(path), 1))
    if path == EXTENDING:  # its first block registers a method: run once per process, shared with test_extending
        namespace.update(extending_method())
        blocks = blocks[1:]
    for number, block in blocks:
        try:
            exec(compile(block, f"{path.name} python block {number}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"{path.name}, python block {number} failed: {type(error).__name__}: {error}") from error
