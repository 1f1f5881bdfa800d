"""benchmarks/circuit_reuse.py on a tiny random Llama whose tokenizer has no pad token (as GPT-2's and Llama's have
none): the main path runs and its JSON holds the downstream-path check (the repair with the downstream heads frozen
at their unrepaired outputs, and the converse), the random pools given the same greedy search, and a disjoint
search / test split; the freezing itself is checked against the runs it should reproduce."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import circuit_reuse as cr  # noqa: E402
import splits  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def padless_model_dir(tmp_path_factory):
    """A tiny random Llama (2 layers, 4 heads, 2 kv heads) with the bundled tokenizer, its pad token removed."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from headwise.experiments.bundled import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    tokenizer.pad_token = None
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=None,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llama_no_pad")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(padless_model_dir):
    import headwise

    model, tokenizer = headwise.load_base_model(str(padless_model_dir), dtype=torch.float32, attn_implementation="eager")
    assert tokenizer.pad_token is None and tokenizer.pad_token_id is None
    return model.eval(), tokenizer


def test_encode_pads_left_with_eos_and_leaves_the_tokenizer_as_it_was(loaded):
    _, tokenizer = loaded
    side = tokenizer.padding_side
    encoding = cr.encode(tokenizer, ["Q: a red pen?\nA:", "Q: a much longer prompt about a green notebook?\nA:"])
    assert tokenizer.pad_token is None and tokenizer.padding_side == side
    mask, ids = encoding["attention_mask"], encoding["input_ids"]
    assert mask[0, 0] == 0 and mask[1].all() and mask[:, -1].all()  # left padding
    assert (ids[0][mask[0] == 0] == tokenizer.eos_token_id).all()
    positions = cr.position_ids(mask)
    assert positions[0][mask[0] == 1].tolist() == list(range(int(mask[0].sum())))  # every prompt from position 0


def test_freezing_the_downstream_heads_reproduces_the_runs_it_should(loaded):
    model, tokenizer = loaded
    ids = cr.colour_ids(tokenizer)
    search, test, record = cr.split_items(12, 0, tokens_of=lambda w: len(tokenizer(" " + w, add_special_tokens=False).input_ids))
    assert record["sizes"] == {"search": 4, "test": 8}
    runs = cr.LastTokenRuns(model, tokenizer, test, ids, batch_size=8)
    heads = [(0, 1)]
    downstream = cr.downstream_of(heads, 2, 4)
    assert downstream == [(1, 0), (1, 1), (1, 2), (1, 3)]
    bare = runs.last_logits(0)
    repaired = runs.last_logits(0, cr.override(model, heads))
    assert not torch.allclose(bare, repaired, atol=1e-4)

    # the downstream heads frozen at the bare run's outputs, with no repair: the bare run
    def bare_frozen(chunk, encoding):
        return cr.frozen(model, downstream, cr.record_heads(model, encoding))
    assert torch.allclose(runs.last_logits(0, bare_frozen), bare, atol=1e-4)

    # the repair with the downstream heads given the repaired run's outputs: the repaired run
    import contextlib

    @contextlib.contextmanager
    def repaired_frozen(chunk, encoding):
        with cr.override(model, heads)(chunk, encoding):
            source = cr.record_heads(model, encoding)
        with cr.override(model, heads)(chunk, encoding), cr.frozen(model, downstream, source):
            yield
    assert torch.allclose(runs.last_logits(0, repaired_frozen), repaired, atol=1e-4)

    # the two measured variants differ from both ends: each cuts a path the repair uses
    direct = runs.last_logits(0, cr.direct_path_only(model, heads, downstream))
    through = runs.last_logits(0, cr.downstream_path_only(model, heads, downstream))
    for variant in (direct, through):
        assert not torch.allclose(variant, bare, atol=1e-4) and not torch.allclose(variant, repaired, atol=1e-4)
    assert cr.surviving(0.6, 0.4, 0.9) == pytest.approx(0.4) and cr.surviving(0.5, 0.5, 0.5) is None


def test_random_pools_match_the_candidates_layers_and_avoid_them():
    import random

    every = [(layer, head) for layer in range(6) for head in range(4)]
    candidates = [(5, 0), (5, 1), (5, 2), (4, 0), (2, 3)]
    pool = cr.random_pool(random.Random(0), candidates, every)
    assert len(pool) == len(candidates) and not set(pool) & set(candidates) and len(set(pool)) == len(pool)
    layers = sorted(layer for layer, _ in pool)
    assert layers.count(5) == 1 and layers.count(4) >= 1 and layers.count(2) >= 1  # layer 5 has one other head left
    assert all(2 <= layer <= 5 for layer in layers)  # the shortfall from between the candidates' layers
    assert pool == cr.random_pool(random.Random(0), candidates, every)  # seeded


def test_main_path_reports_the_downstream_check_and_the_searched_control(padless_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "result.json"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cr.main(["--seeds", "0", "1", "--items", "24", "--patch-items", "6", "--candidates", "3", "--max-heads", "2",
             "--random-pools", "2", "--model", str(padless_model_dir), "--device", "cpu", "--dtype", "float32",
             "--attn-implementation", "eager", "--batch-size", "4", "--json", str(out), "--out", str(tmp_path / "plots")])
    run = json.loads(out.read_text())
    assert str(padless_model_dir) in run["settings"]
    for seed in ("0", "1"):
        check = run["downstream_path"][seed]
        assert {"repaired_heads", "downstream_heads", "bare", "repair", "direct_path_only", "downstream_path_only",
                "gain_surviving_direct", "gain_surviving_downstream"} <= set(check)
        if check["repaired_heads"]:
            assert isinstance(check["direct_path_only"], float) and isinstance(check["downstream_path_only"], float)
            first = min(layer for layer, _ in check["repaired_heads"])
            assert all(layer > first for layer, _ in check["downstream_heads"])
        pools = run["random_pool_search"][seed]
        assert len(pools) == 2
        candidates = {tuple(h) for h in run["heads"][seed]["candidates"]}
        for pool in pools:
            assert len(pool["pool"]) == 3 and not {tuple(h) for h in pool["pool"]} & candidates
            assert {tuple(h) for h in pool["heads"]} <= {tuple(h) for h in pool["pool"]} and len(pool["heads"]) <= 2
            assert 0 <= pool["search_accuracy"] <= 1 and 0 <= pool["test_accuracy"] <= 1
        record = run["splits"][seed]
        splits.check_disjoint(record["items"])
        assert record["sizes"] == {"search": 8, "test": 16}
    assert len(run["accuracy"]["override heads the same search finds in a random pool (same layers)"]) == 4
    assert "Where the repair acts" in run["body"] and "random pools, same layers" in run["body"]
