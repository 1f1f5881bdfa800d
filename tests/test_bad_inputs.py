"""Bad and hostile inputs across the public API: each gives a clear error that names the fix, and the model
is left exactly as it was (``assert_untouched``)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from torch import nn

import headwise
from headwise import AdapterShapeError, UnsupportedArchitectureError
from headwise.loading import AdapterFileError
from lofit import LofitConfig, set_offset_units
from soft_injection import SoftInjectionConfig, inject, set_task_embedding
from tiny_models import tiny_model
from untouched import assert_untouched, model_state
from zerotuning import ZeroTuningConfig, set_gamma

WEIGHTS = "adapter_model.safetensors"


def expect(error, match, call, model=None):
    """``call()`` raises ``error`` whose message matches ``match``; ``model`` is unchanged by it."""
    before = None if model is None else model_state(model)
    with pytest.raises(error, match=match):
        call()
    if model is not None:
        assert_untouched(model, before)


@pytest.fixture
def saved(tmp_path):
    """A saved LoFiT adapter folder and a fresh base model to load it onto."""
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1), (2, 3)], use_scale=True))
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    return folder, tiny_model("llama")


# -- configs (no model involved) ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(heads=[(0.5, 1)]), "layer index must be an integer"),
    (dict(heads=[(0, "1")]), "head index must be an integer"),
    (dict(heads=[(True, 1)]), "layer index must be an integer"),
    (dict(heads=[]), "heads is empty"),
    (dict(heads="some"), "list of \\(layer, head\\) pairs or 'all'"),
    (dict(heads=[(0, 1, 2)]), "\\(layer, head\\) pair"),
    (dict(heads="all", layers=[]), "non-empty list of layer indices"),
    (dict(heads=[(0, 1)], layers=[0]), "only goes with heads='all'"),
    (dict(use_offset=False), "use_offset=True, use_scale=True, or both"),
    (dict(l1_lambda=-1.0), "must be >= 0"),
])
def test_lofit_config_refuses(kwargs, match):
    expect(ValueError, match, lambda: LofitConfig(**kwargs))


@pytest.mark.parametrize("make, match", [
    (lambda: ZeroTuningConfig(gamma=0.0), "finite number > 0"),
    (lambda: ZeroTuningConfig(gamma=float("inf")), "finite number > 0"),
    (lambda: SoftInjectionConfig(template="Q: x\nA:"), "must contain '\\{input\\}'"),
])
def test_method_configs_refuse(make, match):
    expect(ValueError, match, make)


# -- wrap ------------------------------------------------------------------------------------------
def test_wrap_refuses_a_module_without_config():
    module = nn.Sequential(nn.Linear(4, 4))
    expect(UnsupportedArchitectureError, "transformers model", lambda: headwise.wrap(module, LofitConfig()), module)


def test_wrap_refuses_a_peft_config_of_another_library():
    model = tiny_model("llama")
    expect(TypeError, "headwise adapter config", lambda: headwise.wrap(model, LoraConfig()), model)


@pytest.mark.parametrize("heads, match", [([(3, 0)], "layers 0..2"), ([(0, 4)], "heads 0..3"), ([(-1, 0)], "layers 0..2")])
def test_wrap_refuses_heads_outside_the_model(heads, match):
    model = tiny_model("llama")
    expect(IndexError, match, lambda: headwise.wrap(model, LofitConfig(heads=heads)), model)


def test_wrap_refuses_layers_outside_the_model():
    model = tiny_model("llama")
    expect(IndexError, "layers 0..2", lambda: headwise.wrap(model, LofitConfig(heads="all", layers=[5])), model)


@pytest.mark.parametrize("template, match", [
    ("model.layers.self_attn.o_proj", "must contain '\\{layer\\}'"),
    ("model.blocks.{layer}.attn.out", "model.blocks.\\{layer\\}.attn.out"),  # echoes the template
])
def test_wrap_refuses_a_bad_site_template(template, match):
    model = tiny_model("llama")
    error = ValueError if "{layer}" not in template else UnsupportedArchitectureError
    expect(error, match, lambda: headwise.wrap(model, LofitConfig(site_template=template)), model)


def test_wrap_refuses_a_wrapped_model():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(ValueError, "add_adapter", lambda: headwise.wrap(model, LofitConfig(heads=[(1, 1)])), model)


def test_peft_get_peft_model_rolls_back_a_failed_injection():
    import peft

    model = tiny_model("llama")
    expect(IndexError, "heads 0..3", lambda: peft.get_peft_model(model, LofitConfig(heads=[(0, 1), (2, 9)])), model)


def test_add_adapter_with_bad_heads_leaves_the_wrapped_model_as_it_was():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(IndexError, "heads 0..3", lambda: model.add_adapter("second", LofitConfig(heads=[(1, 7)])), model)


def test_add_adapter_twice_under_one_name_is_refused():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(ValueError, "already", lambda: model.add_adapter("default", LofitConfig(heads=[(1, 1)])), model)


def test_zerotuning_refuses_an_attention_implementation_without_a_mask():
    model = tiny_model("llama")
    model.config._attn_implementation = "flash_attention_2"
    expect(ValueError, "set_attn_implementation\\('sdpa'\\)", lambda: headwise.wrap(model, ZeroTuningConfig()), model)


# -- loading --------------------------------------------------------------------------------------
def test_load_from_a_missing_folder(tmp_path):
    model = tiny_model("llama")
    expect(AdapterFileError, "no adapter folder", lambda: headwise.from_pretrained(model, str(tmp_path / "nope")), model)


def test_load_from_a_file_instead_of_a_folder(saved):
    folder, model = saved
    expect(AdapterFileError, "is a file", lambda: headwise.from_pretrained(model, folder / WEIGHTS), model)


def test_load_without_config(saved):
    folder, model = saved
    (folder / "adapter_config.json").unlink()
    expect(AdapterFileError, "adapter_config.json is missing", lambda: headwise.from_pretrained(model, folder), model)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ("[]", "no 'peft_type'"),
    ('{"peft_type": "LORA"}', "headwise loads"),
    ('{"peft_type": "LOFIT", "heads": [[0, 99]], "num_layers": 3, "num_heads": 4, "head_dim": 8}', "heads 0..3"),
    ('{"peft_type": "LOFIT", "heads": [[0.5, 1]]}', "integer"),
])
def test_load_refuses_a_garbage_config(saved, text, match):
    folder, model = saved
    (folder / "adapter_config.json").write_text(text)
    error = IndexError if "99" in text else AdapterFileError
    expect(error, match, lambda: headwise.from_pretrained(model, folder), model)


def test_load_without_weights(saved):
    folder, model = saved
    (folder / WEIGHTS).unlink()
    expect(AdapterFileError, "is missing", lambda: headwise.from_pretrained(model, folder), model)


def test_load_refuses_pickle_weights(saved):
    folder, model = saved
    (folder / WEIGHTS).rename(folder / "adapter_model.bin")
    expect(AdapterFileError, "safetensors only", lambda: headwise.from_pretrained(model, folder), model)


def test_load_refuses_a_truncated_weights_file(saved):
    folder, model = saved
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    expect(AdapterFileError, "truncated or corrupt", lambda: headwise.from_pretrained(model, folder), model)


def test_load_refuses_a_base_model_key(saved):
    folder, model = saved
    tensors = load_file(folder / WEIGHTS)
    tensors["base_model.model.model.layers.0.self_attn.o_proj.weight"] = torch.zeros(32, 32)
    save_file(tensors, folder / WEIGHTS)
    expect(AdapterFileError, "o_proj.weight", lambda: headwise.from_pretrained(model, folder), model)


def test_load_refuses_a_missing_key(saved):
    folder, model = saved
    tensors = load_file(folder / WEIGHTS)
    del tensors[next(k for k in tensors if k.endswith("lofit_scale"))]
    save_file(tensors, folder / WEIGHTS)
    expect(AdapterFileError, "lacks .*lofit_scale", lambda: headwise.from_pretrained(model, folder), model)


def test_load_refuses_non_finite_weights_unless_asked(saved):
    folder, model = saved
    tensors = load_file(folder / WEIGHTS)
    key = next(k for k in tensors if k.endswith("lofit_offset"))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, folder / WEIGHTS)
    expect(AdapterFileError, "NaN or inf; pass allow_nonfinite=True", lambda: headwise.from_pretrained(model, folder), model)
    loaded = headwise.from_pretrained(model, folder, allow_nonfinite=True)
    assert torch.isnan(next(p for n, p in loaded.named_parameters() if "lofit_offset" in n)).any()


def test_load_refuses_a_tensor_of_the_wrong_shape_and_rolls_back(saved):
    folder, model = saved
    tensors = load_file(folder / WEIGHTS)
    key = next(k for k in tensors if k.endswith("lofit_offset"))
    tensors[key] = torch.zeros(1, 7)
    save_file(tensors, folder / WEIGHTS)
    expect(RuntimeError, "size mismatch", lambda: headwise.from_pretrained(model, folder), model)


def test_load_refuses_a_site_template_that_moves_the_edit(saved):
    folder, model = saved
    config = json.loads((folder / "adapter_config.json").read_text())
    config["site_template"] = "model.layers.{layer}.self_attn.q_proj"  # same width as o_proj on this model
    (folder / "adapter_config.json").write_text(json.dumps(config))
    expect(AdapterFileError, "refusing to edit another module", lambda: headwise.from_pretrained(model, folder), model)


def test_load_onto_another_shape(saved):
    folder, _ = saved
    model = tiny_model("llama", num_hidden_layers=2)
    expect(AdapterShapeError, "was made for a model with", lambda: headwise.from_pretrained(model, folder), model)


def test_a_matching_adapter_of_another_model_type_loads_with_a_warning(saved, caplog):
    folder, _ = saved
    model = tiny_model("mistral")
    with caplog.at_level("WARNING"):
        headwise.from_pretrained(model, folder)
    assert "saved for model_type 'llama'" in caplog.text


# -- method helpers ------------------------------------------------------------------------------
@pytest.fixture
def zero_tuned():
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    return headwise.wrap(model, ZeroTuningConfig(heads=[(0, 1), (1, 2)]))


@pytest.mark.parametrize("gamma, match", [
    ({(2, 0): 2.0}, "not in the ZeroTuning adapter"),
    ({(0, 1.0): 2.0}, "integer layer and head"),
    (float("inf"), "finite number > 0"),
    (float("nan"), "finite number > 0"),
    (-1.0, "finite number > 0"),
    ({(0, 1): 0.0}, "finite number > 0"),
])
def test_set_gamma_refuses(zero_tuned, gamma, match):
    expect(ValueError, match, lambda: set_gamma(zero_tuned, gamma), zero_tuned)


def test_set_gamma_on_a_model_without_zerotuning(zero_tuned):
    expect(ValueError, "no ZeroTuning adapter named 'other'", lambda: set_gamma(zero_tuned, 2.0, adapter_name="other"), zero_tuned)


@pytest.fixture
def injected():
    return inject(tiny_model("llama"), torch.zeros(3, 4, 8))


@pytest.mark.parametrize("embedding, error, match", [
    (torch.zeros(3, 4, 7), ValueError, "this model needs \\(layers, heads, head_dim\\)=\\(3, 4, 8\\)"),
    (torch.full((3, 4, 8), float("nan")), ValueError, "finite floats"),
    ([[0.0]], TypeError, "must be a tensor"),
])
def test_set_task_embedding_refuses(injected, embedding, error, match):
    expect(error, match, lambda: set_task_embedding(injected, embedding), injected)


def test_set_offset_units_refuses():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(ValueError, "\\(layers, heads\\)=\\(3, 4\\)", lambda: set_offset_units(model, torch.ones(3, 5)), model)
    expect(ValueError, "finite and > 0", lambda: set_offset_units(model, torch.zeros(3, 4)), model)


def test_merging_soft_injection_is_refused_before_any_change(injected):
    expect(TypeError, "cannot be merged", lambda: injected.merge_and_unload(), injected)


def test_merge_with_a_string_or_unknown_adapter_name():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(TypeError, "list of adapter names", lambda: model.merge_and_unload(adapter_names="default"), model)
    expect(ValueError, "no adapter named 'x'", lambda: model.merge_adapter(adapter_names=["x"]), model)


def test_fit_with_an_unknown_loss_is_refused_before_any_change():
    from soft_injection import fit
    from tiny_tokenizer import tiny_tokenizer

    model = tiny_model("llama")
    rows = [{"input": f"w{i}", "output": f"w{i + 1}"} for i in range(20)]
    expect(ValueError, "loss must be one of", lambda: fit(model, tiny_tokenizer(), rows, rows, loss="mse"), model)


def test_select_heads_refuses_a_wrapped_model():
    from lofit import select_heads

    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(ValueError, "unload\\(\\)", lambda: select_heads(model, []), model)


def test_train_offsets_with_bad_heads_leaves_the_base_model_untouched():
    from datasets import Dataset

    from headwise.experiments.data import answer_only_example
    from lofit import train_offsets

    model = tiny_model("llama")
    data = Dataset.from_list([answer_only_example([5, 6, 7], [8]) for _ in range(10)])
    expect(IndexError, "heads 0..3", lambda: train_offsets(model, [(0, 9)], data), model)


@pytest.mark.parametrize("call, match", [
    (lambda m, t: __import__("headwise.experiments.evaluate").evaluate.first_token_accuracy(m, t, ["Q: w1\nA:"], []), "1 prompts but 0 answers"),
    (lambda m, t: __import__("headwise.experiments.evaluate").evaluate.greedy_exact_match(m, t, [], []), "no prompts"),
    (lambda m, t: __import__("headwise.experiments.evaluate").evaluate.label_accuracy(m, t, ["Q: w1\nA:"], [0, 1], ["w1", "w2"]), "0 prompts|1 prompts but 2 labels"),
    (lambda m, t: __import__("soft_injection").answer_loss(m, t, ["Q: w1\nA:"], []), "one answer per prompt"),
    (lambda m, t: __import__("soft_injection").fit(m, t, [{"input": "w1", "output": "w2"}] * 5), "cannot spare n_valid=100"),
])
def test_evaluation_and_losses_refuse_unpaired_or_empty_inputs(call, match):
    from tiny_tokenizer import tiny_tokenizer

    model = tiny_model("llama")
    expect(ValueError, match, lambda: call(model, tiny_tokenizer()), model)


# -- CLI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("setup, match", [
    (lambda d: None, "not found"),
    (lambda d: (d.mkdir(), (d / "adapter_config.json").write_text("{oops")), "not valid JSON"),
    (lambda d: (d.mkdir(), (d / "adapter_config.json").write_text("[1]")), "no 'peft_type'"),
])
def test_cli_prints_one_line_for_user_mistakes(tmp_path, capsys, setup, match):
    from headwise.cli import main

    folder = tmp_path / "adapter"
    setup(folder)
    with pytest.raises(SystemExit) as exit_info:
        main(["adapter", str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("headwise: error:") and __import__("re").search(match, err)


def test_cli_inspect_a_missing_model(tmp_path, capsys):
    from headwise.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "no model or adapter at" in capsys.readouterr().err
