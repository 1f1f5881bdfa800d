"""``import headwise`` is quiet and cheap: no bitsandbytes, no matplotlib, no warnings, little time of its own."""

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys, time, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import torch, transformers  # what every user imports anyway
    start = time.perf_counter()
    import headwise
    seconds = time.perf_counter() - start
    import peft.import_utils, transformers.utils
print(json.dumps({
    "seconds": seconds,
    "modules": sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("bitsandbytes", "matplotlib")),
    "warnings": [str(w.message) for w in caught],
    "bnb_available": [peft.import_utils.is_bnb_available(), transformers.utils.is_bitsandbytes_available()],
}))
"""


def run_probe(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_import_loads_neither_bitsandbytes_nor_matplotlib_and_says_nothing():
    result, probe = run_probe(PROBE)
    assert probe["modules"] == []
    assert probe["warnings"] == []
    assert result.stderr == ""
    # bitsandbytes stays available to whoever uses it: PEFT's and transformers' checks still see it
    assert probe["bnb_available"] == [True, True]


def test_import_time_of_headwise_beyond_torch_and_transformers_is_small():
    _, probe = run_probe(PROBE)
    assert probe["seconds"] < 15, f"import headwise took {probe['seconds']:.1f} s on top of torch + transformers"


def test_bitsandbytes_is_imported_when_peft_needs_it():
    code = "import sys, headwise, peft.helpers; peft.helpers.bnb.functional; print('{}'); assert 'bitsandbytes' in sys.modules"
    run_probe(code)


@pytest.mark.parametrize("package", ["headwise", "lofit", "soft_injection", "zerotuning", "interventions"])
def test_each_package_imports_first_in_a_fresh_interpreter(package):
    """No import cycle: a method package imported before headwise registers itself (its module complete),
    and headwise imports no method package."""
    code = (f"import sys, {package}, headwise; "
            "print(json.dumps(sorted(m for m in ('lofit', 'soft_injection', 'zerotuning', 'interventions') if m in sys.modules))"
            " + ' ' + json.dumps(sorted(headwise.registered_methods())))")
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported, registered = (json.loads(part) for part in result.stdout.strip().splitlines()[-1].split(" ", 1))
    if package == "headwise":
        assert imported == [] and registered == []
    else:
        assert imported == [package]
        assert len(registered) == 1


def test_the_experiment_kits_old_module_names_are_gone():
    import importlib

    import headwise

    for old in ("models", "data", "evaluate", "training", "plots", "classification"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"headwise.{old}")
        assert not hasattr(headwise, old)
