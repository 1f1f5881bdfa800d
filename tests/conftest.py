import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# The repo's tests read the reference data beside the checkout; an installed headwise never guesses it.
REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if REFERENCE_DATA.is_dir():
    os.environ.setdefault("HEADWISE_DATA", str(REFERENCE_DATA))


@pytest.fixture(scope="session")
def shared_data():
    """The reference data folder (../shared/data or $HEADWISE_DATA). Missing in CI is a failure, not a skip:
    CI runs beside shared/, so a test that cannot find it would otherwise pass by not running."""
    from headwise.experiments.data import shared_data_dir

    try:
        return shared_data_dir()
    except ValueError:  # DataSourceError: no folder given
        if os.environ.get("CI"):
            pytest.fail("../shared/data is absent in CI: the reference data must be beside the clone")
        pytest.skip("../shared/data is absent (set HEADWISE_DATA)")


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory):
    """``(wheel, python)``: the built wheel installed in a fresh venv outside the repository (tests/wheel_venv.py)."""
    from wheel_venv import build_wheel_venv

    return build_wheel_venv(tmp_path_factory.mktemp("wheel_venv"))
