"""headwise as a user gets it: the built wheel, installed into a fresh virtual environment outside the
repository (the ``wheel_venv`` fixture), and the ``headwise`` command from another folder; tests/test_docs.py runs
every README block there."""

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DATA_ERROR = r"""
from headwise.experiments.data import load_word_pairs
try:
    load_word_pairs("antonym")
except ValueError as error:
    print(error)
"""


@pytest.fixture(scope="module")
def installed(wheel_venv, tmp_path_factory):
    wheel, python = wheel_venv
    return wheel, python.parent.parent, tmp_path_factory.mktemp("install") / "user"


def user_env():
    env = {k: v for k, v in os.environ.items() if k not in ("HEADWISE_DATA", "PYTHONPATH")}
    return env


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_no_tests(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("headwise/__init__.py", "headwise/experiments/sources.py", "headwise/cli/__init__.py", "headwise_cli/__init__.py",
                    "lofit/__init__.py", "soft_injection/__init__.py", "zerotuning/__init__.py"):
        assert package in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]


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
