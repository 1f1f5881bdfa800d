"""A plain transformers.Trainer trains a wrapped model: answer-only loss goes down, only the adapter moves."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import headwise
from headwise.experiments.data import PaddingCollator, answer_only_example
from lofit import LofitConfig
from tiny_models import VOCAB, tiny_model


def toy_task(n=64, seed=0):
    """prompt: three tokens and a separator; answer: two tokens that depend on the first prompt token."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(10, VOCAB, (3,), generator=g).tolist() + [3]
        answer = [4 + prompt[0] % 4, 5]
        rows.append(answer_only_example(prompt, answer))
    return Dataset.from_list(rows)


def answer_loss(model, dataset, collator):
    batch = collator(list(dataset))
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_trainer_lowers_answer_loss_and_changes_only_adapter_parameters(arch, seed, tmp_path):
    torch.manual_seed(seed)  # the adapter's random start
    model = headwise.wrap(tiny_model(arch), LofitConfig(heads="all"))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    data, collator = toy_task(), PaddingCollator(pad_token_id=0)
    before = answer_loss(model, data, collator)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=5, learning_rate=5e-2,
        lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, logging_steps=5, save_strategy="no",
        report_to=[], use_cpu=True, seed=seed, remove_unused_columns=False,
    )
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    after = answer_loss(model, data, collator)
    assert after < before - 0.2, (before, after)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())
    assert all(not torch.equal(params[n], p) for n, p in adapter.items())


def test_answer_only_labels_and_padding():
    example = answer_only_example([7, 8, 9], [4, 5])
    assert example == {"input_ids": [7, 8, 9, 4, 5], "labels": [-100, -100, -100, 4, 5]}
    right = PaddingCollator(pad_token_id=0)([example, answer_only_example([6], [4])])
    assert right["input_ids"].tolist() == [[7, 8, 9, 4, 5], [6, 4, 0, 0, 0]]
    assert right["labels"].tolist()[1] == [-100, 4, -100, -100, -100]
    assert right["attention_mask"].tolist()[1] == [1, 1, 0, 0, 0]
    left = PaddingCollator(pad_token_id=0, padding_side="left")([example, answer_only_example([6], [4])])
    assert left["input_ids"].tolist()[1] == [0, 0, 0, 6, 4]
    with pytest.raises(ValueError, match="no tokens"):
        answer_only_example([1], [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_offsets_lowers_the_training_loss_and_keeps_the_best_validation_epoch(seed):
    from headwise.experiments.data import PaddingCollator
    from lofit import train_offsets

    data, collator = toy_task(n=80, seed=seed), PaddingCollator(pad_token_id=0)
    base = tiny_model("llama")
    before = answer_loss(base, data, collator)
    model = train_offsets(base, [(0, 1), (1, 2), (2, 0), (2, 3)], data, lr=0.1, epochs=6, seed=seed, valid=0.25)
    after = answer_loss(model, data, collator)
    assert after < before - 0.2, (seed, before, after)
    units = [b for n, b in model.named_buffers() if "lofit_offset_unit" in n]
    assert units and all((u > 0).all() and not torch.equal(u, torch.ones_like(u)) for u in units)  # head RMS units


def test_keep_best_adapter_restores_the_best_check(tmp_path):
    from headwise.experiments.training import KeepBestAdapter, split_for_validation, train

    train_rows, valid_rows = split_for_validation(toy_task(n=40), 0.25, seed=0)
    assert (len(train_rows), len(valid_rows)) == (30, 10)
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads="all"))
    # lr 5 wrecks the adapter after its first epoch: the best check is the start, which must come back
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    output = train(model, train_rows, 5.0, epochs=3, eval_dataset=valid_rows, max_grad_norm=0)
    history = output.metrics["eval_history"]
    assert len(history) == 4 and output.metrics["best_eval_loss"] == min(loss for _, loss in history)
    best_step = output.metrics["best_step"]
    if best_step == 0:
        assert all(torch.equal(p, start[n]) for n, p in model.named_parameters() if p.requires_grad)
    collator = PaddingCollator(pad_token_id=0)
    assert answer_loss(model, valid_rows, collator) == pytest.approx(output.metrics["best_eval_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="valid fraction"):
        split_for_validation(train_rows, 1.5)
    assert KeepBestAdapter  # public


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trained_ln_gamma_lowers_the_training_loss_on_every_seed(seed, tmp_path):
    from headwise.experiments.training import train
    from zerotuning import ZeroTuningConfig

    torch.manual_seed(seed)
    base = tiny_model("llama", seed=seed)
    base.set_attn_implementation("sdpa")
    model = headwise.wrap(base, ZeroTuningConfig(heads="all"))
    data, collator = toy_task(n=64, seed=seed), PaddingCollator(pad_token_id=0)
    before = answer_loss(model, data, collator)
    train(model, data, 0.1, epochs=4, seed=seed)
    after = answer_loss(model, data, collator)
    assert after < before - 0.01, (seed, before, after)
