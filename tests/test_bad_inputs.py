"""Bad and hostile inputs across the public API: each gives a clear error that names the fix, and the model
is left exactly as it was (``assert_untouched``)."""

from __future__ import annotations

import importlib
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


def evaluate_module():
    return importlib.import_module("headwise.experiments.evaluate")


@pytest.mark.parametrize("call, match", [
    (lambda m, t: evaluate_module().first_token_accuracy(m, t, ["Q: w1\nA:"], []), "1 prompts but 0 answers"),
    (lambda m, t: evaluate_module().greedy_exact_match(m, t, [], []), "no prompts"),
    (lambda m, t: evaluate_module().label_accuracy(m, t, ["Q: w1\nA:"], [0, 1], ["w1", "w2"]), "0 prompts|1 prompts but 2 labels"),
    (lambda m, t: __import__("soft_injection").answer_loss(m, t, ["Q: w1\nA:"], []), "one answer per prompt"),
    (lambda m, t: __import__("soft_injection").fit(m, t, [{"input": "w1", "output": "w2"}] * 5), "cannot spare n_valid=100"),
])
def test_evaluation_and_losses_refuse_unpaired_or_empty_inputs(call, match):
    from tiny_tokenizer import tiny_tokenizer

    model = tiny_model("llama")
    expect(ValueError, match, lambda: call(model, tiny_tokenizer()), model)


# -- validate, then mutate (issue 22): every argument before any change or training run; a later
# failure leaves the model exactly as it was ------------------------------------------------------
def toy_rows(n: int = 10):
    from datasets import Dataset

    from headwise.experiments.data import answer_only_example

    return Dataset.from_list([answer_only_example([5, 6, 7], [8]) for _ in range(n)])


def word_rows(n: int = 20):
    return [{"input": f"w{i}", "output": f"w{i + 1}"} for i in range(n)]


def fail(*args, **kwargs):
    raise RuntimeError("a later step failed")


def must_not_run(*args, **kwargs):
    raise AssertionError("ran before every argument was checked")


def modes(model) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("wrapped", [False, True])
def test_inject_with_an_embedding_of_the_wrong_shape_leaves_no_hooks_or_holders(wrapped):
    model = tiny_model("llama")
    if wrapped:
        model = inject(model, torch.zeros(3, 4, 8))
    expect(ValueError, "this model needs \\(layers, heads, head_dim\\)=\\(3, 4, 8\\)",
           lambda: inject(model, torch.zeros(3, 4, 7), adapter_name="second"), model)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(config=LofitConfig()), TypeError, "must be a SoftInjectionConfig"),
    (dict(adapter_name=3), TypeError, "adapter_name must be a string"),
    (dict(adapter_name="a.b"), ValueError, "without '.'"),
])
def test_inject_refuses_a_bad_config_or_name(kwargs, error, match):
    model = tiny_model("llama")
    expect(error, match, lambda: inject(model, torch.zeros(3, 4, 8), **kwargs), model)


def test_inject_twice_under_one_name_is_refused(injected):
    expect(ValueError, "already has an adapter named 'default'", lambda: inject(injected, torch.zeros(3, 4, 8)), injected)


@pytest.mark.parametrize("wrapped", [False, True])
def test_inject_rolls_back_when_a_later_step_fails(monkeypatch, wrapped):
    import soft_injection.train

    model = inject(tiny_model("llama"), torch.zeros(3, 4, 8)) if wrapped else tiny_model("llama")
    monkeypatch.setattr(soft_injection.train, "set_task_embedding", fail)
    expect(RuntimeError, "later step", lambda: inject(model, torch.zeros(3, 4, 8), adapter_name="second"), model)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(steps=-1), ValueError, "steps must be an integer >= 0"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(eval_every=0), ValueError, "eval_every must be an integer >= 1"),
    (dict(embedding=torch.zeros(2, 4, 8)), ValueError, "this model needs"),
    (dict(config=LofitConfig()), TypeError, "must be a SoftInjectionConfig"),
    (dict(valid_examples=[{"input": "w1"}]), ValueError, "valid_examples\\[0\\] has no 'output' column; it has \\['input'\\]"),
])
def test_soft_injection_fit_checks_every_argument_first(monkeypatch, kwargs, error, match):
    import soft_injection.train
    from soft_injection import fit
    from tiny_tokenizer import tiny_tokenizer

    monkeypatch.setattr(soft_injection.train, "extract_task_embedding", must_not_run)
    model = tiny_model("llama")
    kwargs = {"embedding": torch.zeros(3, 4, 8), "valid_examples": word_rows(4), "steps": 1, **kwargs}
    expect(error, match, lambda: fit(model, tiny_tokenizer(), word_rows(12), **kwargs), model)


def test_soft_injection_fit_names_a_missing_column_before_extracting(monkeypatch):
    import soft_injection.train
    from soft_injection import fit
    from tiny_tokenizer import tiny_tokenizer

    monkeypatch.setattr(soft_injection.train, "extract_task_embedding", must_not_run)
    model = tiny_model("llama")
    rows = [{"question": f"w{i}", "answer": f"w{i + 1}"} for i in range(20)]
    expect(ValueError, "train_examples\\[0\\] has no 'input' column; it has \\['answer', 'question'\\]",
           lambda: fit(model, tiny_tokenizer(), rows, n_valid=5), model)


def test_soft_injection_fit_rolls_back_when_training_fails(monkeypatch):
    import soft_injection.train
    from soft_injection import fit
    from tiny_tokenizer import tiny_tokenizer

    model = tiny_model("llama")
    monkeypatch.setattr(soft_injection.train, "_validation_loss", fail)
    expect(RuntimeError, "later step", lambda: fit(model, tiny_tokenizer(), word_rows(12), word_rows(4),
                                                    embedding=torch.zeros(3, 4, 8), steps=1), model)


def test_extraction_names_a_missing_column():
    from soft_injection import extract_task_embedding
    from tiny_tokenizer import tiny_tokenizer

    model = tiny_model("llama")
    rows = [{"x": f"w{i}", "output": f"w{i}"} for i in range(5)]
    expect(ValueError, "examples\\[0\\] has no 'input' column; it has \\['output', 'x'\\]",
           lambda: extract_task_embedding(model, tiny_tokenizer(), rows, n_prompts=2, n_shots=2), model)


@pytest.mark.parametrize("kwargs, match", [
    (dict(template="Q: {input} {x}\nA:"), "names the placeholder \\{x\\}"),
    (dict(n_prompts=0), "n_prompts must be an integer >= 1"),
    (dict(n_shots=-1), "n_shots must be an integer >= 0"),
    (dict(init_theta=float("nan")), "init_theta must be a finite number"),
])
def test_soft_injection_config_refuses(kwargs, match):
    expect(ValueError, match, lambda: SoftInjectionConfig(**kwargs))


@pytest.fixture
def zero_tuned_at_3(zero_tuned):
    set_gamma(zero_tuned, 3.0)  # a state a reset to gamma 1 would visibly change
    return zero_tuned


def test_calibrate_checks_the_whole_grid_before_setting_a_gamma(zero_tuned_at_3):
    from zerotuning import calibrate

    calls = []
    score = lambda m: calls.append(1) or 0.0  # noqa: E731
    expect(ValueError, "gammas\\[2\\]: gamma must be a finite number > 0, got -1.0; nothing was set",
           lambda: calibrate(zero_tuned_at_3, score, gammas=[1.0, 2.0, -1.0]), zero_tuned_at_3)
    assert not calls


@pytest.mark.parametrize("kwargs, match", [
    (dict(gammas=[]), "gammas is empty: give at least one gamma"),
    (dict(gammas=2.0), "gammas must be a list of numbers"),
    (dict(heads=[]), "heads is empty"),
    (dict(heads=[(2, 0)]), "not in the ZeroTuning adapter"),
    (dict(score="accuracy"), "score must be a function of the model"),
])
def test_calibrate_refuses(zero_tuned_at_3, kwargs, match):
    from zerotuning import calibrate

    kwargs = {"score": lambda m: 0.0, **kwargs}
    error = TypeError if kwargs["score"] == "accuracy" else ValueError
    expect(error, match, lambda: calibrate(zero_tuned_at_3, **kwargs), zero_tuned_at_3)


@pytest.mark.parametrize("result", ["high", float("nan")])
def test_calibrate_refuses_a_score_that_is_no_number_and_puts_the_gammas_back(zero_tuned_at_3, result):
    from zerotuning import calibrate

    expect(ValueError, "it must return a number", lambda: calibrate(zero_tuned_at_3, lambda m: result, gammas=[1.0, 2.0]),
           zero_tuned_at_3)


def test_calibrate_puts_the_gammas_back_when_the_score_fails_late(zero_tuned_at_3):
    from zerotuning import calibrate

    calls = []

    def score(model):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a later step failed")
        return float(len(calls))

    expect(RuntimeError, "later step", lambda: calibrate(zero_tuned_at_3, score, gammas=[0.5, 2.0, 4.0]), zero_tuned_at_3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(by="layer"), "by must be 'index' or 'head', got 'layer'"),
    (dict(gamma=0.0), "finite number > 0"),
    (dict(adapter_name="other"), "no ZeroTuning adapter named 'other'"),
])
def test_profile_heads_refuses_before_resetting_gamma(zero_tuned_at_3, kwargs, match):
    from zerotuning import profile_heads

    expect(ValueError, match, lambda: profile_heads(zero_tuned_at_3, must_not_run, **kwargs), zero_tuned_at_3)


def test_profile_heads_of_heads_outside_the_adapter_is_refused_before_scoring(zero_tuned_at_3):
    from zerotuning import profile_heads

    expect(ValueError, "not in the ZeroTuning adapter", lambda: profile_heads(zero_tuned_at_3, must_not_run), zero_tuned_at_3)


def test_profile_heads_puts_the_gammas_back_when_the_score_fails():
    from zerotuning import profile_heads

    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    model = headwise.wrap(model, ZeroTuningConfig(heads="all"))
    set_gamma(model, 3.0)
    calls = []

    def score(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a later step failed")
        return 0.0

    expect(RuntimeError, "later step", lambda: profile_heads(model, score), model)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=100), ValueError, "k must be a count in 1..12"),
    (dict(k=0), ValueError, "k must be a count in 1..12"),
    (dict(lr=-1.0), ValueError, "lr must be a finite number > 0"),
    (dict(l1=-1.0), ValueError, "l1 must be a finite number >= 0"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(epochs=0), ValueError, "epochs must be a finite number > 0"),
    (dict(learning_rate_typo=1), TypeError, "unknown training argument 'learning_rate_typo'"),
])
def test_select_heads_checks_every_argument_before_training(monkeypatch, kwargs, error, match):
    import lofit.select
    from lofit import select_heads

    monkeypatch.setattr(lofit.select, "train", must_not_run)
    model = tiny_model("llama")
    expect(error, match, lambda: select_heads(model, toy_rows(), **{"k": 2, **kwargs}), model)


@pytest.mark.parametrize("data, error, match", [
    ([], ValueError, "train_dataset is empty \\(0 rows\\).*training_set\\(tokenizer, pairs\\)"),
    ("empty", ValueError, "train_dataset is empty \\(0 rows\\)"),
    ([{"input_ids": [5, 6]}], ValueError, "train_dataset\\[0\\] has no 'labels' column; it has \\['input_ids'\\]"),
    ({"input_ids": [[5]]}, TypeError, "must be a datasets.Dataset or a list of rows"),
])
def test_select_heads_refuses_empty_or_malformed_data(data, error, match):
    from datasets import Dataset

    from lofit import select_heads

    if data == "empty":
        data = Dataset.from_list([])
    model = tiny_model("llama")
    expect(error, match, lambda: select_heads(model, data, k=2), model)


def test_select_heads_refuses_a_dataset_without_labels():
    from datasets import Dataset

    from lofit import select_heads

    model = tiny_model("llama")
    data = Dataset.from_list([{"input_ids": [5, 6, 7]}] * 4)
    expect(ValueError, "train_dataset has no 'labels' column; it has \\['input_ids'\\]", lambda: select_heads(model, data, k=2), model)


@pytest.mark.parametrize("use_cache, train_mode", [(True, False), (False, True)])
def test_select_heads_leaves_the_model_as_it_was_when_training_fails(monkeypatch, use_cache, train_mode):
    import lofit.select
    from lofit import select_heads

    monkeypatch.setattr(lofit.select, "train", fail)
    model = tiny_model("llama")
    model.config.use_cache = use_cache
    model.train(train_mode)
    before = modes(model)
    expect(RuntimeError, "later step", lambda: select_heads(model, toy_rows(), k=2), model)
    assert modes(model) == before and model.config.use_cache is use_cache


def test_select_heads_leaves_the_model_as_it_was_after_a_run():
    from lofit import select_heads

    model = tiny_model("llama")
    model.config.use_cache = True
    before, flags = model_state(model), modes(model)
    select_heads(model, toy_rows(8), k=2, min_steps=1)
    assert_untouched(model, before)
    assert modes(model) == flags and model.config.use_cache is True


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(heads=[(0, 9)]), IndexError, "heads 0..3"),
    (dict(valid=1.5), ValueError, "valid fraction must be in \\(0, 1\\)"),
    (dict(lr=float("inf")), ValueError, "lr must be a finite number > 0"),
    (dict(adapter_name=""), ValueError, "adapter_name must be a non-empty string"),
    (dict(bogus=1), TypeError, "unknown training argument 'bogus'"),
    (dict(train_dataset=[]), ValueError, "train_dataset is empty"),
    (dict(eval_dataset=[]), ValueError, "eval_dataset is empty"),
    (dict(train_dataset=[{"input_ids": [5, 6], "labels": [-100, 6]}] * 4), TypeError, "needs a datasets.Dataset"),
])
def test_train_offsets_checks_every_argument_first(monkeypatch, kwargs, error, match):
    import lofit.select
    from lofit import train_offsets

    monkeypatch.setattr(lofit.select, "offset_units_from_data", must_not_run)
    monkeypatch.setattr(lofit.select, "train", must_not_run)
    model = tiny_model("llama")
    kwargs = {"heads": [(0, 1)], "train_dataset": toy_rows(), **kwargs}
    expect(error, match, lambda: train_offsets(model, **kwargs), model)


def test_train_offsets_rolls_back_when_training_fails(monkeypatch):
    import lofit.select
    from lofit import train_offsets

    monkeypatch.setattr(lofit.select, "train", fail)
    model = tiny_model("llama")
    expect(RuntimeError, "later step", lambda: train_offsets(model, [(0, 1)], toy_rows()), model)


def test_lofit_fit_checks_phase_two_arguments_before_phase_one(monkeypatch):
    import lofit.select
    from lofit import fit

    monkeypatch.setattr(lofit.select, "select_heads", must_not_run)
    model = tiny_model("llama")
    expect(ValueError, "valid fraction", lambda: fit(model, toy_rows(), k=2, valid=2.0), model)
    expect(TypeError, "unknown training argument 'bogus'", lambda: fit(model, toy_rows(), k=2, bogus=1), model)


def test_set_offset_units_refuses_a_list():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(TypeError, "units must be a tensor of shape \\(layers, heads\\)=\\(3, 4\\)",
           lambda: set_offset_units(model, [[1.0] * 4] * 3), model)


@pytest.mark.parametrize("name, error, match", [
    (5, TypeError, "adapter_name must be a string"), ("", ValueError, "non-empty string without '.'"),
    ("a.b", ValueError, "non-empty string without '.'"),
])
def test_wrap_and_load_refuse_a_bad_adapter_name(saved, name, error, match):
    folder, model = saved
    expect(error, match, lambda: headwise.wrap(model, LofitConfig(heads=[(0, 1)]), adapter_name=name), model)
    expect(error, match, lambda: headwise.from_pretrained(model, folder, adapter_name=name), model)


def test_from_pretrained_onto_a_wrapped_model_points_to_load_adapter(saved):
    folder, model = saved
    model = headwise.wrap(model, LofitConfig(heads=[(0, 1)]))
    expect(ValueError, "model.load_adapter\\(folder", lambda: headwise.from_pretrained(model, folder), model)


# -- data helpers: a missing column or an empty list is named, with the fix ---------------------------
def test_padding_collator_refuses_no_rows():
    from headwise.experiments.data import PaddingCollator

    expect(ValueError, "no rows to pad", lambda: PaddingCollator(pad_token_id=0)([]))
    expect(ValueError, "features\\[0\\] has no 'input_ids' column; it has \\['x'\\]", lambda: PaddingCollator(pad_token_id=0)([{"x": [1]}]))


def test_few_shot_prompt_and_training_set_name_a_missing_column():
    from headwise.experiments.data import few_shot_prompt, training_set
    from tiny_tokenizer import tiny_tokenizer

    expect(ValueError, "demonstrations\\[1\\] has no 'output' column; it has \\['input', 'x'\\]",
           lambda: few_shot_prompt("w1", [{"input": "w2", "output": "w3"}, {"input": "w4", "x": "w5"}]))
    expect(ValueError, "pairs\\[0\\] has no 'input' column; it has \\['output', 'x'\\].*input_column=",
           lambda: training_set(tiny_tokenizer(), [{"x": "w1", "output": "w2"}]))
    expect(ValueError, "training_set got no pairs", lambda: training_set(tiny_tokenizer(), []))
    expect(ValueError, "names the placeholder \\{x\\}", lambda: few_shot_prompt("w1", template="Q: {x}\nA:"))


def test_classification_prompt_names_a_missing_column():
    from headwise.experiments.classification import ClassificationTask

    task = ClassificationTask("t", "Review: {x}\nSentiment:", ["no", "yes"], [], [], [])
    expect(ValueError, "names the column 'x', which this row lacks; it has \\['text'\\]",
           lambda: task.prompt({"fields": {"text": "w1"}, "label": 0}))
    expect(ValueError, "no training row of class 0", lambda: task.demonstrations(2))


def test_train_refuses_empty_data_with_a_fix():
    from headwise.experiments.training import train

    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(0, 1)]))
    expect(ValueError, "train_dataset is empty \\(0 rows\\).*training_set", lambda: train(model, [], 1e-3), model)


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
    assert len(err.splitlines()) == 1 and err.startswith("headwise adapter: error:") and __import__("re").search(match, err)


def test_cli_inspect_a_missing_model(tmp_path, capsys):
    from headwise.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "no model or adapter at" in capsys.readouterr().err


@pytest.mark.parametrize("call", ["forward", "generate"])
def test_adapter_names_refused_for_an_unknown_name_leaves_the_model_untouched(call):
    """Mixed batches (tests/test_mixed.py) check every name before the forward pass starts."""
    from tiny_models import adapted_tiny

    model = adapted_tiny("lofit").eval()
    ids = torch.tensor([[5, 17, 33], [9, 23, 4]])
    run = model if call == "forward" else model.generate
    extra = {} if call == "forward" else {"max_new_tokens": 2, "do_sample": False, "pad_token_id": 0}
    expect(ValueError, "non-existing adapter", lambda: run(input_ids=ids, adapter_names=["default", "defualt"], **extra), model)
