"""Mixed adapter batches (``adapter_names=``, one adapter per row): every row equals that row run alone with its
adapter, for every method, architecture, padding side and attention implementation, forward and generate."""

import copy
import statistics
import threading
import time

import peft
import pytest
import torch

import headwise
import interventions as iv
from headwise.mixed import current_rows
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig, inject
from tiny_models import ARCHS, module_tree, tiny_model
from zerotuning import ZeroTuningConfig

METHODS = ["lofit", "soft_injection", "zerotuning", "gate", "positional_gate"]
NAMES = ["task1", "__base__", "task2", "task1", "task2"]  # five rows: two adapters, the bare model, repeats


def _config(method: str, variant: int):
    heads = [[(0, 1), (1, 2), (2, 3)], [(0, 0), (1, 2), (2, 1)]][variant]
    if method == "lofit":
        return LofitConfig(heads=heads, use_scale=True, init_weights=False)
    if method == "zerotuning":
        return ZeroTuningConfig(heads=heads, gamma=2.0, init_weights=False)
    if method == "soft_injection":
        return SoftInjectionConfig(heads=heads, init_weights=False)
    return iv.HeadGateConfig(heads=heads, scale=0.3 + 0.4 * variant, init_weights=False,
                             positions=[-1] if method == "positional_gate" else None)


def two_adapters(method: str, arch: str = "llama", attn: str = "sdpa"):
    """A tiny model of ``arch`` carrying adapters "task1" and "task2" of ``method``, both clearly non-identity."""
    base = tiny_model(arch)
    base.set_attn_implementation(attn)
    sites = headwise.find_head_sites(base)
    shape = (len(sites), sites[0].num_heads, sites[0].head_dim)
    torch.manual_seed(7)
    if method == "soft_injection":
        model = inject(base, 3 * torch.randn(shape), _config(method, 0), adapter_name="task1")
        model = inject(model, 3 * torch.randn(shape), _config(method, 1), adapter_name="task2")
    else:
        model = headwise.wrap(base, _config(method, 0), adapter_name="task1")
        model.add_adapter("task2", _config(method, 1))
        if "gate" in method:
            for name in ("task1", "task2"):
                iv.set_baseline(model, torch.randn(shape), adapter_name=name)
    model.set_adapter("task1")
    return model.eval()


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (GPT-2 would count the pads otherwise)."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


def padded(lengths, side: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        tokens = torch.randint(3, 90, (n,), generator=g)
        where = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, where], mask[row, where] = tokens, 1
    return ids, mask


def alone(model, name: str, ids: torch.Tensor, **kwargs):
    """One row run by itself with its adapter active (or the bare model for "__base__")."""
    if name == "__base__":
        with model.disable_adapter():
            return kwargs.pop("run")(ids, **kwargs)
    model.set_adapter(name)
    try:
        return kwargs.pop("run")(ids, **kwargs)
    finally:
        model.set_adapter("task1")


ATTENTION = [(arch, attn) for arch in ARCHS for attn in ("eager", "sdpa") if (arch, attn) != ("gemma2", "sdpa")]  # no sdpa in gemma2


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch, attn", ATTENTION)
@pytest.mark.parametrize("method", METHODS)
def test_each_row_of_a_mixed_batch_equals_the_row_run_alone(method, arch, side, attn):
    model = two_adapters(method, arch, attn)
    ids, mask = padded([6, 4, 7, 5, 3], side, seed=len(arch))
    with torch.no_grad():
        mixed = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), adapter_names=NAMES).logits
        per_adapter = {n: model(input_ids=ids[:1, mask[0].bool()]).logits for n in ["task1"]}
        for row, name in enumerate(NAMES):
            real = mask[row].bool()
            expected = alone(model, name, ids[row:row + 1, real], run=lambda x: model(input_ids=x).logits)
            torch.testing.assert_close(mixed[row:row + 1, real], expected, atol=2e-5, rtol=1e-4)
    # the adapters differ from each other and from the bare model: the test could fail
    assert not torch.allclose(per_adapter["task1"], alone(model, "task2", ids[:1, mask[0].bool()], run=lambda x: model(input_ids=x).logits), atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("method", METHODS)
def test_generate_with_a_mixed_batch_through_the_kv_cache_equals_each_row_alone(method, arch):
    model = two_adapters(method, arch, "eager" if arch == "gemma2" else "sdpa")
    ids, mask = padded([6, 4, 7, 5, 3], "left", seed=3)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, adapter_names=NAMES, **kwargs)
        for row, name in enumerate(NAMES):
            real = ids[row:row + 1, mask[row].bool()]
            expected = alone(model, name, real, run=lambda x: model.generate(input_ids=x, **kwargs))
            assert out[row, -5:].tolist() == expected[0, -5:].tolist(), (row, name)


def test_beam_search_repeats_each_rows_adapter_over_its_beams():
    model = two_adapters("lofit")
    ids, mask = padded([5, 5], "left", seed=4)
    kwargs = dict(max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, adapter_names=["task2", "__base__"], **kwargs)
        assert out[0].tolist() == alone(model, "task2", ids[:1], run=lambda x: model.generate(input_ids=x, **kwargs))[0].tolist()
        assert out[1].tolist() == alone(model, "__base__", ids[1:], run=lambda x: model.generate(input_ids=x, **kwargs))[0].tolist()


def test_a_batch_on_one_adapter_equals_that_adapter_set_active():
    model = two_adapters("zerotuning")
    ids, mask = padded([6, 4, 5], "left")
    with torch.no_grad():
        mixed = model(input_ids=ids, attention_mask=mask, adapter_names=["task2"] * 3).logits
        model.set_adapter("task2")
        torch.testing.assert_close(mixed, model(input_ids=ids, attention_mask=mask).logits, atol=1e-6, rtol=1e-5)


def test_rows_travel_with_the_call_two_threads_with_different_mixes():
    model = two_adapters("lofit")
    ids, mask = padded([5, 5, 5], "left", seed=5)
    mixes = [["task1", "task2", "__base__"], ["task2", "__base__", "task1"]]
    with torch.no_grad():
        expected = [model(input_ids=ids, attention_mask=mask, adapter_names=m).logits for m in mixes]
    failures = []

    def serve(which: int) -> None:
        with torch.no_grad():
            for _ in range(30):
                got = model(input_ids=ids, attention_mask=mask, adapter_names=mixes[which]).logits
                if not torch.allclose(got, expected[which], atol=1e-6):
                    failures.append(which)

    threads = [threading.Thread(target=serve, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and current_rows() is None


@pytest.mark.parametrize("names, error, message", [
    (["task1", "nope", "task2", "task1", "task2"], ValueError, "non-existing adapter(s): nope"),
    (["task1", "task2"], ValueError, "Length of `adapter_names` should be the same as the number of inputs, but got 2 and 5"),
    (["task1", "__base__", "task2", "task1", "task2", "task1"], ValueError, "but got 6 and 5"),
    ("task1", TypeError, "must be a list of adapter names"),
])
@pytest.mark.parametrize("call", ["forward", "generate"])
def test_refusals(names, error, message, call):
    model = two_adapters("lofit")
    ids, mask = padded([6, 4, 7, 5, 3], "left")
    with pytest.raises(error, match=__import__("re").escape(message)):
        if call == "forward":
            model(input_ids=ids, attention_mask=mask, adapter_names=names)
        else:
            model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=2, pad_token_id=0)


def test_refused_in_training_mode_and_with_a_merged_adapter():
    model = two_adapters("lofit")
    ids, mask = padded([4, 4], "left")
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"])
    model.eval()
    model.merge_adapter(["task1"])
    with pytest.raises(ValueError, match="merged adapters, please call unmerge_adapter first"):
        model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"])
    model.unmerge_adapter()
    model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"])


def test_a_changed_adapter_is_seen_by_the_next_mixed_batch():
    """Banks are rebuilt when an adapter's tensors change (in place or replaced), never served stale."""
    model = two_adapters("lofit")
    ids, mask = padded([5, 5], "left")
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"]).logits
        holder = model.base_model.holders_of("task2")[0]
        holder.lofit_offset["task2"].add_(1.0)
        after = model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"]).logits
        torch.testing.assert_close(after[0], before[0])
        assert not torch.allclose(after[1], before[1])
        expected = alone(model, "task2", ids[1:], run=lambda x: model(input_ids=x).logits)
        torch.testing.assert_close(after[1:], expected, atol=2e-5, rtol=1e-4)


def test_mixed_batches_are_trainable_free_disable_adapter_runs_every_row_bare():
    model = two_adapters("lofit")
    ids, mask = padded([5, 5], "left")
    with torch.no_grad(), model.disable_adapter():
        mixed = model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"]).logits
        bare = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(mixed, bare)


def test_a_thousand_adapters_loaded_do_not_slow_a_batch_that_uses_one():
    """A model holding 1,000 adapters against a copy holding one, timed in alternation (so a busy machine slows
    both alike): a batch on one adapter costs the same."""
    base = tiny_model("llama", hidden_size=64, intermediate_size=96)
    config = LofitConfig(heads=[(0, 1), (1, 2), (2, 3)], init_weights=False)
    single = headwise.wrap(copy.deepcopy(base), config, adapter_name="t0").eval()
    loaded = headwise.wrap(base, config, adapter_name="t0").eval()
    for i in range(1, 1000):
        loaded.add_adapter(f"t{i}", config)
    ids, mask = padded([12] * 16, "left")
    names = ["t0"] * 16

    def timed(model) -> float:
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, adapter_names=names)
        return time.perf_counter() - start

    with torch.no_grad():
        timed(single), timed(loaded)
        rounds = [(timed(single), timed(loaded)) for _ in range(21)]
    ratio = statistics.median(many / one for one, many in rounds)
    assert ratio < 1.5, rounds


def test_load_a_folder_of_adapters_under_their_names_and_serve_them_in_one_batch(tmp_path):
    model = two_adapters("soft_injection")
    model.save_pretrained(tmp_path / "many")  # PEFT writes a named adapter into a subfolder of its name
    assert (tmp_path / "many" / "task1" / "adapter_config.json").is_file()
    (tmp_path / "many" / "notes").mkdir()  # a subfolder without an adapter is not one
    base = tiny_model("llama")
    base.set_attn_implementation("sdpa")  # as two_adapters builds it
    loaded = headwise.load_adapters(base, tmp_path / "many").eval()
    assert sorted(loaded.peft_config) == ["task1", "task2"]
    memory = headwise.adapter_memory(loaded)
    assert memory == headwise.adapter_memory(model, ["task1", "task2"]) and all(size > 0 for size in memory.values())
    ids, mask = padded([6, 4, 7, 5, 3], "left")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask, adapter_names=NAMES).logits,
                                   model(input_ids=ids, attention_mask=mask, adapter_names=NAMES).logits)


def test_load_adapters_checks_every_folder_before_attaching_any(tmp_path):
    model = two_adapters("lofit")
    model.save_pretrained(tmp_path / "good")
    (tmp_path / "many" / "x1").mkdir(parents=True)
    (tmp_path / "many" / "x2").mkdir()
    for part in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / "many" / "x1" / part).write_bytes((tmp_path / "good" / "task1" / part).read_bytes())
    (tmp_path / "many" / "x2" / "adapter_config.json").write_text("{oops")
    base = tiny_model("llama").eval()
    with pytest.raises(Exception, match="not valid JSON|cannot be read"):
        headwise.load_adapters(base, tmp_path / "many")
    assert not hasattr(base, "peft_config") and not any("headwise" in n for n, _ in base.named_modules())
    with pytest.raises(ValueError, match="already has an adapter named 'task1'"):
        headwise.load_adapters(model, {"task1": tmp_path / "good" / "task1"})


def test_a_load_that_fails_part_way_leaves_the_model_as_it_was(tmp_path, monkeypatch):
    """load_adapters takes one snapshot for the whole load: an error on the third adapter removes the first two
    (from a base model and from a PeftModel that already had adapters)."""
    model = two_adapters("lofit")
    model.save_pretrained(tmp_path / "saved")
    folders = {f"x{i}": tmp_path / "saved" / ("task1" if i % 2 else "task2") for i in range(4)}
    real_load = peft.PeftModel.load_adapter

    def load_then_fail_on_x2(self, folder, adapter_name, *args, **kwargs):
        if adapter_name == "x2":
            raise RuntimeError("disk went away")
        return real_load(self, folder, adapter_name, *args, **kwargs)

    monkeypatch.setattr(peft.PeftModel, "load_adapter", load_then_fail_on_x2)
    base = tiny_model("llama").eval()
    before = module_tree(base)
    with pytest.raises(RuntimeError, match="disk went away"):
        headwise.load_adapters(base, folders)
    assert not hasattr(base, "peft_config") and module_tree(base) == before
    tree, configs = module_tree(model), dict(model.peft_config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="disk went away"):
        headwise.load_adapters(model, folders)
    assert module_tree(model) == tree and dict(model.peft_config) == configs
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and model.state_dict().keys() == state.keys()


def test_a_compiled_model_does_not_ignore_adapter_names():
    """A compiled graph cannot read the rows' ContextVar: it must still give each row its adapter (it falls back
    to eager for that call), never the active adapter on every row."""
    model = two_adapters("lofit")
    ids, mask = padded([5, 5], "left")
    compiled = torch.compile(model, backend="eager")  # traced by dynamo; inductor is not needed to check this
    with torch.no_grad():
        compiled(input_ids=ids, attention_mask=mask)  # a graph without mixed batches first
        got = compiled(input_ids=ids, attention_mask=mask, adapter_names=["task2", "__base__"]).logits
        expected = model(input_ids=ids, attention_mask=mask, adapter_names=["task2", "__base__"]).logits
        active = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, active, atol=1e-3)


def test_a_new_task_embedding_is_seen_by_the_next_mixed_batch():
    """Buffers count for a bank's freshness too (a task embedding is a buffer, replaced by set_task_embedding)."""
    from soft_injection import set_task_embedding

    model = two_adapters("soft_injection")
    ids, mask = padded([5, 5], "left")
    sites = headwise.find_head_sites(model.get_base_model())
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"]).logits
        set_task_embedding(model, torch.randn(len(sites), sites[0].num_heads, sites[0].head_dim), "task2")
        after = model(input_ids=ids, attention_mask=mask, adapter_names=["task1", "task2"]).logits
        torch.testing.assert_close(after[0], before[0])
        expected = alone(model, "task2", ids[1:], run=lambda x: model(input_ids=x).logits)
    torch.testing.assert_close(after[1:], expected, atol=2e-5, rtol=1e-4)


def test_adapter_memory_counts_parameters_and_buffers():
    model = two_adapters("soft_injection")
    holders = model.base_model.holders_of("task1")
    expected = sum(4 * (h.soft_injection_theta["task1"].numel() + h.soft_injection_embedding["task1"].numel())
                   + 8 * h.head_index["task1"].numel() for h in holders)  # fp32 values, int64 head indices
    assert headwise.adapter_memory(model)["task1"] == expected
