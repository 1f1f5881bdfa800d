"""Calls that meet: one model used from two threads, a forward nested inside another, and nothing of a
call left behind after it. Every method and every intervention; each output must equal the same batch
run alone."""

import contextlib
import gc
import threading
import weakref

import pytest
import torch

import headwise
import interventions as iv
from headwise import hooks
from headwise.hooks import SiteEdit, add_edit, remove_edit
from tiny_models import adapted_tiny as adapted, tiny_model

ROUNDS = 100
# Two batches of different shapes (left padded), and a second batch of the first one's shape.
PREFILL = (torch.tensor([[0, 0, 5, 17, 33, 8], [9, 23, 4, 8, 41, 12]]), torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]))
SAME_SHAPE = (torch.tensor([[0, 7, 3, 12, 30, 2], [0, 0, 0, 6, 19, 27]]), torch.tensor([[0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]]))
DECODE = (torch.tensor([[0, 0, 30, 6, 19], [4, 11, 27, 9, 5], [0, 13, 8, 2, 44]]),
          torch.tensor([[0, 0, 1, 1, 1], [1] * 5, [0, 1, 1, 1, 1]]))


def intervention(name: str, model):
    """An analysis context on the bare model; positional ones take masks of PREFILL's shape."""
    ids, mask = PREFILL
    if name == "patch":
        return iv.patch(model, {(1, 0): "zero", (2, 1): 0.5, (0, 3): torch.ones(8)})
    if name == "patch_positions":
        return iv.patch(model, {(1, 2): 0.0, (2, 0): 3.0}, positions=iv.last_token(mask))
    if name == "override_attention":
        keys = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0]]).bool()  # real keys in PREFILL and SAME_SHAPE
        return iv.override_attention(model, {(1, 1): keys, (2, 2): keys}, queries=iv.last_token(mask))
    if name == "block_keys":
        first = iv.token_index(mask, 0)
        return iv.block_keys(model, [(1, 0), (2, 3)], keys=first, queries=iv.last_token(mask))
    raise ValueError(name)


def prefill(model, batch):
    with torch.no_grad():
        return model(input_ids=batch[0], attention_mask=batch[1]).logits


def generate(model, batch):
    with torch.no_grad():
        return model.generate(input_ids=batch[0], attention_mask=batch[1], max_new_tokens=4, do_sample=False, pad_token_id=0,
                              output_scores=True, return_dict_in_generate=True)


def scores(out):
    return torch.stack(out.scores)


def run_two_threads(model, first, second):
    """Thread 1 prefills ``first`` again and again, thread 2 generates ``second`` through the KV cache; each
    result is compared with the batch run alone."""
    expected_prefill = prefill(model, first)
    expected_generate = generate(model, second)
    failures: list[str] = []
    barrier = threading.Barrier(2)

    def prefiller():
        barrier.wait()
        for round_ in range(ROUNDS):
            got = prefill(model, first)
            real = first[1].bool()
            if not torch.allclose(got[real], expected_prefill[real], atol=1e-5, rtol=0):
                failures.append(f"prefill round {round_}: {(got[real] - expected_prefill[real]).abs().max():.3g}")

    def generator():
        barrier.wait()
        for round_ in range(ROUNDS // 4):
            out = generate(model, second)
            if not torch.equal(out.sequences, expected_generate.sequences) or not torch.allclose(
                    scores(out), scores(expected_generate), atol=1e-5, rtol=0):
                failures.append(f"generate round {round_}")

    errors: list[BaseException] = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
        return run

    threads = [threading.Thread(target=guarded(prefiller)), threading.Thread(target=guarded(generator))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert not failures, failures[:5]
    assert hooks._FRAMES.get() == ()


METHODS = ["lofit", "soft_injection", "zerotuning", "gate"]
INTERVENTIONS = ["patch", "patch_positions", "override_attention", "block_keys"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shapes", ["different", "same"])
def test_two_threads_on_one_adapted_model_get_their_own_answers(method, shapes):
    model = adapted(method)
    run_two_threads(model, PREFILL if shapes == "different" else SAME_SHAPE, DECODE if shapes == "different" else PREFILL)


@pytest.mark.parametrize("name", INTERVENTIONS)
def test_two_threads_inside_one_analysis_context_get_their_own_answers(name):
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    with intervention(name, model):
        run_two_threads(model, PREFILL, SAME_SHAPE)


@pytest.mark.parametrize("method", METHODS)
def test_analysis_contexts_on_an_adapted_model_from_two_threads(method):
    model = adapted(method)
    with intervention("patch", model):
        run_two_threads(model, PREFILL, DECODE)


@contextlib.contextmanager
def nested_call_inside_attention(model, batch, results):
    """Run the whole model on ``batch`` from inside layer 1's attention (its q_proj), once per outer call."""
    q_proj = model.get_base_model().model.layers[1].self_attn.q_proj if hasattr(model, "get_base_model") \
        else model.model.layers[1].self_attn.q_proj
    depth = []

    def hook(module, args):
        if depth:
            return None
        depth.append(1)
        try:
            results.append(prefill(model, batch))
        finally:
            depth.pop()
        return None

    handle = q_proj.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("method", METHODS)
def test_a_forward_nested_inside_another_is_exact(method):
    model = adapted(method)
    outer_alone, inner_alone = prefill(model, PREFILL), prefill(model, DECODE)
    inner = []
    with nested_call_inside_attention(model, DECODE, inner):
        outer = prefill(model, PREFILL)
    real = PREFILL[1].bool()
    assert len(inner) == 1
    torch.testing.assert_close(outer[real], outer_alone[real], atol=1e-6, rtol=0)
    torch.testing.assert_close(inner[0][DECODE[1].bool()], inner_alone[DECODE[1].bool()], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", INTERVENTIONS)
def test_a_forward_nested_inside_an_analysis_context_is_exact(name):
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    with intervention(name, model):
        outer_alone, inner_alone = prefill(model, PREFILL), prefill(model, SAME_SHAPE)
        inner = []
        with nested_call_inside_attention(model, SAME_SHAPE, inner):
            outer = prefill(model, PREFILL)
    torch.testing.assert_close(outer[PREFILL[1].bool()], outer_alone[PREFILL[1].bool()], atol=1e-6, rtol=0)
    torch.testing.assert_close(inner[0][SAME_SHAPE[1].bool()], inner_alone[SAME_SHAPE[1].bool()], atol=1e-6, rtol=0)


class CallWatcher(SiteEdit):
    """Keeps weak references to every call it sees, and to the call's tensors."""

    changes_heads = False

    def __init__(self):
        self.refs = []

    def apply_heads(self, heads, call):
        self.refs += [weakref.ref(call), weakref.ref(call.hidden_states), weakref.ref(heads)]
        if isinstance(call.attention_mask, torch.Tensor):
            self.refs.append(weakref.ref(call.attention_mask))
        return heads


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("use_cache", [False, True])
def test_nothing_of_a_call_is_referenced_after_it(method, use_cache):
    model = adapted(method)
    watcher = CallWatcher()
    sites = headwise.find_head_sites(model.get_base_model())
    for site in sites:
        add_edit(site, watcher)
    try:
        if use_cache:
            out = generate(model, DECODE)
        else:
            out = prefill(model, PREFILL)
        del out
        gc.collect()
        assert watcher.refs and all(ref() is None for ref in watcher.refs), \
            f"{sum(ref() is not None for ref in watcher.refs)} of {len(watcher.refs)} call objects still alive"
        holders = [m for m in model.modules() if isinstance(m, headwise.adapter.HeadLayer)]
        assert holders and all("call" not in vars(h) and not any(isinstance(v, torch.Tensor) and v.dim() >= 3
                                                                  for k, v in vars(h).items() if k != "_parameters")
                                for h in holders)
    finally:
        for site in sites:
            remove_edit(site, watcher)
    assert hooks._FRAMES.get() == ()
