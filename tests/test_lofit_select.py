"""LoFiT's two phases on tiny models: selection, L1, phase 2 on exactly the chosen heads."""

import pytest
import torch

import headwise
from headwise.heads import top_k_heads
from lofit import LofitConfig, LofitLayer, fit, select_heads, train_offsets
from lofit.select import scale_norms
from test_trainer import toy_task
from tiny_models import hook_count, module_tree, tiny_model


def test_top_k_ranks_globally_across_layers():
    scores = torch.tensor([[0.1, 0.9, 0.2], [0.8, 0.0, 0.95]])
    assert top_k_heads(scores, 3) == [(1, 2), (0, 1), (1, 0)]
    assert top_k_heads(scores, 0.5) == [(1, 2), (0, 1), (1, 0)]
    with pytest.raises(ValueError, match="count"):
        top_k_heads(scores, 7)


def test_selection_returns_k_heads_sorted_by_score_deterministically_and_restores_the_model():
    data = toy_task(32)
    base = tiny_model("llama")
    tree = module_tree(base)
    first = select_heads(base, data, k=5, l1=1e-3, lr=1e-2, epochs=2, seed=3)
    assert module_tree(base) == tree and hook_count(base) == 0
    assert len(first.heads) == 5 and first.scores.shape == (3, 4)
    ranked = [float(first.scores[l, h]) for l, h in first.heads]
    assert ranked == sorted(ranked, reverse=True)
    assert min(ranked) >= max(float(first.scores[l, h]) for l in range(3) for h in range(4) if (l, h) not in first.heads)
    again = select_heads(tiny_model("llama"), data, k=5, l1=1e-3, lr=1e-2, epochs=2, seed=3)
    assert again.heads == first.heads and torch.equal(again.scores, first.scores)


def test_l1_shrinks_the_scale_norms():
    data = toy_task(32)
    free = select_heads(tiny_model("llama"), data, k=3, l1=0.0, lr=1e-2, epochs=3, seed=0)
    sparse = select_heads(tiny_model("llama"), data, k=3, l1=0.05, lr=1e-2, epochs=3, seed=0)
    assert sparse.scores.sum() < 0.7 * free.scores.sum()


def test_phase_two_trains_exactly_the_selected_heads():
    heads = [(0, 3), (2, 1)]
    model = train_offsets(tiny_model("llama"), heads, toy_task(32), lr=1e-2, epochs=1)
    trained = {(m.site.layer, h) for m in model.modules() if isinstance(m, LofitLayer) for h in m.head_index["default"].tolist()}
    assert trained == set(heads)
    assert not any("lofit_scale" in n for n, _ in model.named_parameters())
    assert headwise.trainable_parameters(model)["trainable"] == len(heads) * 8


def test_fit_runs_both_phases_and_plots(tmp_path):
    model, selection = fit(tiny_model("gpt2"), toy_task(32), k=2, select_epochs=1, offset_epochs=1)
    assert {(m.site.layer, h) for m in model.modules() if isinstance(m, LofitLayer) for h in m.head_index["default"].tolist()} == set(selection.heads)
    path = selection.plot(tmp_path / "heads.png")
    assert path.stat().st_size > 1000


def test_scale_norms_needs_scales():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads="all"))
    with pytest.raises(ValueError, match="no LoFiT scale"):
        scale_norms(model, "default")


def test_select_heads_refuses_a_wrapped_model():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads="all"))
    with pytest.raises(ValueError, match="unload"):
        select_heads(model, toy_task(8))


def test_plain_trainer_loss_includes_the_l1_term(tmp_path):
    from transformers import Trainer, TrainingArguments

    from headwise.experiments.data import PaddingCollator

    config = LofitConfig(heads="all", use_scale=True, use_offset=False, l1_lambda=0.25)
    model = headwise.wrap(tiny_model("llama"), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lofit_scale" in name:
                param.fill_(0.01)
    batch = PaddingCollator(pad_token_id=0)(list(toy_task(8)))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        task_only = model.base_model.model(**batch).loss
    penalty = 0.25 * 3 * 4 * 8 * 0.01  # l1 * sum |A| over 3 layers x 4 heads x 8 dims
    assert torch.allclose(loss, task_only + penalty, atol=1e-5)
