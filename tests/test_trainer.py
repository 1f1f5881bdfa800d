"""A plain transformers.Trainer trains a wrapped model: answer-only loss goes down, only the adapter moves."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import headwise
from headwise.data import PaddingCollator, answer_only_example
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


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_trainer_lowers_answer_loss_and_changes_only_adapter_parameters(arch, tmp_path):
    model = headwise.wrap(tiny_model(arch), LofitConfig(heads="all"))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    data, collator = toy_task(), PaddingCollator(pad_token_id=0)
    before = answer_loss(model, data, collator)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=5, learning_rate=5e-2,
        lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0, logging_steps=5, save_strategy="no",
        report_to=[], use_cpu=True, seed=0, remove_unused_columns=False,
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
