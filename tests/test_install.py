"""headwise as a user gets it: the built wheel, installed into a fresh virtual environment outside the
repository, runs the README quickstart and the ``headwise`` command from another folder."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

def readme_quickstart() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quickstart"):]
    return re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M).group(1)


REPORT = r"""
import json, sys
print(json.dumps({"headwise": headwise.__file__, "lofit": sys.modules["lofit"].__file__,
                  "bitsandbytes": "bitsandbytes" in sys.modules, "merged": type(merged).__name__}))
"""

DATA_ERROR = r"""
from headwise.experiments.data import load_word_pairs
try:
    load_word_pairs("antonym")
except ValueError as error:
    print(error)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv with only the wheel's files of its own; every dependency comes from the test venv."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: building in the checkout would leave build/ there (and reuse stale files)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((root / "dist").glob("headwise-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The test venv's packages as a plain path: its .pth files (the editable headwise) are not run.
    Path(site, "test_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return wheel, venv, root / "user"


def user_env():
    env = {k: v for k, v in os.environ.items() if k not in ("HEADWISE_DATA", "PYTHONPATH")}
    return env


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_no_tests(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("headwise/__init__.py", "headwise/experiments/sources.py", "headwise/cli/__init__.py",
                    "lofit/__init__.py", "soft_injection/__init__.py", "zerotuning/__init__.py"):
        assert package in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]


@pytest.mark.slow
def test_the_installed_wheel_runs_the_readme_quickstart_from_another_folder(installed):
    _, venv, user = installed
    user.mkdir(exist_ok=True)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", readme_quickstart() + REPORT], cwd=user, env=user_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for noise in ("FutureWarning", "DeprecationWarning", "kernels-community", "More Information Needed"):
        assert noise not in result.stderr, result.stderr[-3000:]  # quiet: no bitsandbytes banner, no deprecations
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["headwise"].startswith(str(venv)) and report["lofit"].startswith(str(venv))
    assert report == {**report, "bitsandbytes": False, "merged": "LlamaForCausalLM"}
    assert (user / "out" / "upper" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_reference_tasks_outside_the_repo_ask_for_a_data_folder(installed):
    _, venv, user = installed
    user.mkdir(exist_ok=True)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", DATA_ERROR], cwd=user, env=user_env(),
                            capture_output=True, text=True, timeout=300)
    assert "data_dir=FOLDER or set $HEADWISE_DATA" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_the_installed_headwise_command_works(installed):
    _, venv, user = installed
    user.mkdir(exist_ok=True)
    result = subprocess.run([str(venv / "bin" / "headwise"), "--help"], cwd=user, env=user_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "headwise train" in result.stdout, result.stderr
