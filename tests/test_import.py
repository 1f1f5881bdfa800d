"""``import headwise`` is quiet and cheap: no bitsandbytes, no matplotlib, no warnings, little time of its own;
and so is a method used through plain PEFT: wrap, train, save, reload."""

import json
import os
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


# The bundled model (it records its Hub id) through PEFT's own calls, trained by a plain Trainer and by headwise's
# helper, saved and loaded back. With "record" every warning is recorded ("always": none hides behind an earlier
# one); otherwise the interpreter's own filters apply (the test adds -W error::FutureWarning).
PLAIN_PEFT_PROBE = r"""
import json, sys, tempfile, warnings
import torch, transformers, peft, headwise, lofit  # what every user imports anyway
from transformers import Trainer, TrainingArguments
from headwise.experiments.bundled import bundled_model_path
from headwise.experiments.data import PaddingCollator, training_set
from headwise.experiments.training import train
from headwise.progress import disable_progress_bars
bundled_model_path()  # converted once (its bars are then allowed): the loads below come from the cache
print("--- converted", file=sys.stderr, flush=True)
with warnings.catch_warnings(record=sys.argv[1] == "record") as caught:
    if caught is not None:
        warnings.simplefilter("always")
    model, tokenizer = headwise.load_bundled_model()
    rows = training_set(tokenizer, [{"input": w, "output": w.upper()} for w in ("cat", "dog")])
    model = peft.get_peft_model(model, lofit.LofitConfig(heads=[(10, 3), (12, 0)]))
    args = TrainingArguments(tempfile.mkdtemp(), learning_rate=1e-2, max_steps=1, per_device_train_batch_size=2,
                             report_to=[], save_strategy="no", disable_tqdm=True,
                             dataloader_pin_memory=torch.cuda.is_available())
    Trainer(model=model, args=args, train_dataset=rows, data_collator=PaddingCollator(tokenizer.pad_token_id)).train()
    disable_progress_bars()  # the helper's bar is wanted progress, not noise
    train(model, rows, 1e-2, max_steps=1, batch_size=2)
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)
    peft.PeftModel.from_pretrained(model.unload(), folder)
print(json.dumps([f"{w.category.__name__}: {w.message}" for w in caught or []]))
"""


def run_plain_peft_probe(mode, *python_flags, **env):
    environment = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run([sys.executable, *python_flags, "-c", PLAIN_PEFT_PROBE, mode], capture_output=True, text=True,
                            timeout=900, env={**environment, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr.split("--- converted\n", 1)[-1]


@pytest.mark.slow
def test_plain_peft_wrap_train_save_reload_records_no_warning():
    """Online (a Hub that does not answer: any lookup would warn): PEFT's deprecated ``is_gradient_checkpointing``
    read is silenced, save asks the Hub nothing about embeddings, Trainer on CPU pins no memory."""
    caught, _ = run_plain_peft_probe("record", HF_ENDPOINT="http://127.0.0.1:9")
    assert caught == []


@pytest.mark.slow
def test_plain_peft_wrap_train_save_reload_is_quiet_offline_under_error_on_future_warnings():
    _, stderr = run_plain_peft_probe("filters", "-W", "error::FutureWarning", HF_HUB_OFFLINE="1")
    assert stderr == ""


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
