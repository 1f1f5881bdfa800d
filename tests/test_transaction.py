"""headwise.transaction: a failed block leaves the model as it was; one outer transaction covers nested ones."""

import threading

import pytest
import torch
from torch import nn

from headwise import transaction
from headwise.transaction import restored_after, unchanged_on_error


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 2)))


def count_snapshots(monkeypatch) -> list:
    taken = []
    real = transaction._Snapshot

    def spy(model, values=()):
        taken.append(model)
        return real(model, values)

    monkeypatch.setattr(transaction, "_Snapshot", spy)
    return taken


def test_an_error_undoes_new_modules_attributes_flags_and_config():
    model = small_model()
    model.config = type("Config", (), {})()
    model.config.use_cache = True
    weight = model[0].weight
    with pytest.raises(RuntimeError):
        with unchanged_on_error(model):
            model[1].add_module("extra", nn.Linear(2, 2))
            model[0].note = "new"
            weight.requires_grad_(False)
            model.config.use_cache = False
            model.train(False)
            raise RuntimeError("boom")
    assert not hasattr(model[1], "extra") and not hasattr(model[0], "note")
    assert weight.requires_grad and model.config.use_cache and model.training


def test_values_named_are_written_back_and_others_are_not_copied():
    model = small_model()
    named, other = model[0].bias, model[1][0].bias
    named_before, other_before = named.detach().clone(), other.detach().clone()
    with pytest.raises(RuntimeError):
        with unchanged_on_error(model, values=[named]), torch.no_grad():
            named.add_(1.0)
            other.add_(1.0)
            raise RuntimeError("boom")
    assert torch.equal(named, named_before) and torch.equal(other, other_before + 1.0)


def test_a_covering_transaction_takes_one_snapshot_and_undoes_what_nested_ones_did(monkeypatch):
    model = small_model()
    taken = count_snapshots(monkeypatch)
    with pytest.raises(RuntimeError):
        with unchanged_on_error(model, covers_nested=True):
            for i in range(5):
                with unchanged_on_error(model[1]):  # a submodule: covered
                    model[1].add_module(f"added{i}", nn.Linear(2, 2))
            raise RuntimeError("boom")
    assert taken == [model]
    assert [name for name, _ in model.named_modules()] == [name for name, _ in small_model().named_modules()]


def test_nested_transactions_keep_their_own_snapshot_unless_covered(monkeypatch):
    model = small_model()
    taken = count_snapshots(monkeypatch)
    with unchanged_on_error(model):
        with pytest.raises(RuntimeError):
            with unchanged_on_error(model[1]):
                model[1].add_module("added", nn.Linear(2, 2))
                raise RuntimeError("caught inside the outer block")
        assert not hasattr(model[1], "added")  # the inner snapshot put it back although the outer block goes on
    assert len(taken) == 2


def test_covering_ends_with_its_block_and_does_not_reach_other_threads_or_models(monkeypatch):
    model, stranger = small_model(), small_model()
    taken = count_snapshots(monkeypatch)
    with unchanged_on_error(model, covers_nested=True):
        with unchanged_on_error(stranger):  # not part of the covered model
            pass
        thread = threading.Thread(target=lambda: unchanged_on_error(model).__enter__())
        thread.start()
        thread.join()
        with unchanged_on_error(model[0], values=[model[0].bias]):  # values are always copied
            pass
    with unchanged_on_error(model):
        pass
    assert taken == [model, stranger, model, model[0], model]


def test_restored_after_puts_back_on_success_too():
    model = small_model()
    with restored_after(model):
        model[0].add_module("temporary", nn.Linear(3, 3))
    assert not hasattr(model[0], "temporary")
