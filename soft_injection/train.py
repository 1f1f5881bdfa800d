"""Fitting the mixing weights theta with the model frozen: Adam (lr 0.2), validation every
``eval_every`` steps, and the best theta kept.

The paper fits CE on the first answer token only. A model fitted that way says the first word right and
then keeps writing (a list, a sentence): first-token accuracy is high, exact match low. ``fit`` therefore
uses, by default, the NLL of the whole answer and the newline that ends it (``answer_loss``), computed as
generation runs: the prompt is the prefill (the injection acts at its last token), the answer tokens
follow through the KV cache."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

import headwise
from headwise.experiments.data import IGNORE_INDEX, check_columns, encode_pair, few_shot_prompt, left_padded_batch
from headwise.experiments.evaluate import first_answer_token
from headwise.model import check_adapter_name
from headwise.sites import find_head_sites
from headwise.transaction import check_count, check_positive, unchanged_on_error

from .adapter import SoftInjectionLayer, SoftInjectionModel
from .config import SoftInjectionConfig
from .embedding import extract_task_embedding
from headwise.progress import progress_bar

__all__ = ["FitHistory", "fit", "inject", "set_task_embedding", "alpha_matrix", "first_token_loss", "answer_loss", "LOSSES"]

logger = logging.getLogger(__name__)


@dataclass
class FitHistory:
    """Validation loss at each check, and the step whose theta was kept."""

    steps: list[int] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_step: int = 0
    best_loss: float = float("inf")


def _holders(model, adapter_name: str) -> list[SoftInjectionLayer]:
    if not isinstance(getattr(model, "base_model", None), SoftInjectionModel):
        raise ValueError(f"the model has no soft-injection adapter named {adapter_name!r}")
    return model.base_model.holders_of(adapter_name)


def _check_embedding(embedding, expected: tuple[int, int, int]) -> None:
    """The task embedding must be a finite float tensor of shape ``expected`` = (layers, heads, head_dim)."""
    if not isinstance(embedding, torch.Tensor):
        raise TypeError(f"the task embedding must be a tensor of shape (layers, heads, head_dim)={expected}, got {type(embedding).__name__}")
    if tuple(embedding.shape) != expected:
        raise ValueError(
            f"task embedding has shape {tuple(embedding.shape)}; this model needs (layers, heads, head_dim)={expected} "
            "(extract it from this model with soft_injection.extract_task_embedding)"
        )
    if not embedding.is_floating_point() or not torch.isfinite(embedding).all():
        raise ValueError("the task embedding must hold finite floats (it has NaN / inf, or is not a float tensor)")


def _embedding_shape(model, config: SoftInjectionConfig) -> tuple[int, int, int]:
    """(layers, heads, head_dim) of the task embedding ``model`` takes, read off its head sites."""
    sites = find_head_sites(model, config.site_template)
    return len(sites), sites[0].num_heads, sites[0].head_dim


def _check_new_adapter(model, config, adapter_name: str) -> SoftInjectionConfig:
    """The config and name ``inject`` / ``fit`` will attach, checked; returns the config (default if None)."""
    config = SoftInjectionConfig() if config is None else config
    if not isinstance(config, SoftInjectionConfig):
        raise TypeError(f"config must be a SoftInjectionConfig, got {type(config).__name__}")
    check_adapter_name(adapter_name)
    if adapter_name in (getattr(model, "peft_config", None) or {}):
        raise ValueError(
            f"the model already has an adapter named {adapter_name!r}: pick another adapter_name, or "
            "model.delete_adapter(name) first"
        )
    return config


def set_task_embedding(model, embedding: torch.Tensor, adapter_name: str = "default") -> None:
    """Load an (L, H, head_dim) task embedding into a wrapped model's soft-injection adapter."""
    _holders(model, adapter_name)
    config = model.peft_config[adapter_name]
    _check_embedding(embedding, (config.num_layers, config.num_heads, config.head_dim))

    def store(holder, rows):
        holder.soft_injection_embedding[adapter_name] = rows.float().clone()

    model.base_model.write_heads(adapter_name, embedding, store)


def inject(model, embedding: torch.Tensor, config: SoftInjectionConfig | None = None, adapter_name: str = "default"):
    """Wrap ``model`` (or add an adapter to a wrapped one) and load ``embedding``; returns the PeftModel.

    Every argument is checked before the model is touched, and a failure later leaves it as it was."""
    config = _check_new_adapter(model, config, adapter_name)
    _check_embedding(embedding, _embedding_shape(model, config))
    with unchanged_on_error(model):
        if hasattr(model, "peft_config"):
            model.add_adapter(adapter_name, config)
            model.set_adapter(adapter_name)
        else:
            model = headwise.wrap(model, config, adapter_name=adapter_name)
        set_task_embedding(model, embedding, adapter_name)
    return model


def alpha_matrix(model, adapter_name: str = "default") -> torch.Tensor:
    """(L, H) alpha = sigmoid(theta) of a wrapped model (0 where a head is not injected)."""
    _holders(model, adapter_name)
    return model.base_model.read_heads(adapter_name, lambda holder: torch.sigmoid(holder.soft_injection_theta[adapter_name]))


def first_token_loss(model, tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """Mean CE of the first answer token at each prompt's last position (left padding)."""
    if not prompts or len(prompts) != len(answers):
        raise ValueError(f"first_token_loss needs one answer per prompt and at least one prompt, got {len(prompts)} / {len(answers)}")
    device = next(model.parameters()).device
    logits = model(**left_padded_batch(tokenizer, prompts, device), logits_to_keep=1).logits[:, -1].float()
    return F.cross_entropy(logits, torch.tensor([first_answer_token(tokenizer, p, a) for p, a in zip(prompts, answers)], device=device))


def answer_targets(tokenizer, prompt: str, answer: str, terminator: str = "\n") -> list[int]:
    """Token ids the model should write after ``prompt``: the answer, then ``terminator``."""
    example = encode_pair(tokenizer, prompt, answer + terminator)
    targets = example["input_ids"][example["labels"].count(IGNORE_INDEX):]
    if terminator and len(targets) < 2:
        raise ValueError(f"the answer {answer!r} and the terminator {terminator!r} tokenize as one token")
    return targets


def answer_loss(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], terminator: str = "\n") -> torch.Tensor:
    """Mean over items of the NLL of the whole answer and its terminating newline, as greedy decoding
    sees it: the left-padded prompts are one prefill, the answer tokens are decoded on through the cache."""
    if not prompts or len(prompts) != len(answers):
        raise ValueError(f"answer_loss needs one answer per prompt and at least one prompt, got {len(prompts)} / {len(answers)}")
    device = next(model.parameters()).device
    batch = left_padded_batch(tokenizer, prompts, device)
    targets = [answer_targets(tokenizer, p, a, terminator) for p, a in zip(prompts, answers)]
    width = max(map(len, targets))
    labels = torch.full((len(targets), width), IGNORE_INDEX, dtype=torch.long, device=device)
    for row, ids in enumerate(targets):
        labels[row, : len(ids)] = torch.tensor(ids, device=device)
    prefill = model(**batch, use_cache=True, logits_to_keep=1)
    logits = prefill.logits[:, -1:].float()  # (B, 1, V): predicts labels[:, 0]
    if width > 1:
        feed = labels[:, :-1].clamp_min(0)  # ignored positions are masked out below and carry no loss
        mask = torch.cat([batch["attention_mask"], (labels[:, :-1] != IGNORE_INDEX).long()], dim=1)
        rest = model(input_ids=feed, attention_mask=mask, cache=prefill.cache, use_cache=True).logits.float()
        logits = torch.cat([logits, rest], dim=1)  # (B, width, V)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none").sum(1)
    return nll.mean()


LOSSES = {"answer": answer_loss, "first_token": first_token_loss}


@torch.no_grad()
def _validation_loss(model, tokenizer, prompts, answers, batch_size: int, loss_fn=first_token_loss) -> float:
    total = 0.0
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        total += loss_fn(model, tokenizer, prompts[chunk], answers[chunk]).item() * len(prompts[chunk])
    return total / len(prompts)


def fit(
    model, tokenizer, train_examples: Sequence[dict], valid_examples: Sequence[dict] | None = None,
    embedding: torch.Tensor | None = None, config: SoftInjectionConfig | None = None, steps: int = 400,
    lr: float = 0.2, batch_size: int = 8, eval_every: int = 50, n_valid: int = 100, seed: int = 0,
    adapter_name: str = "default", loss: str = "answer",
):
    """Extract the task embedding (unless given), inject it, and fit theta. Returns ``(model, history)``.

    ``loss``: "answer" (NLL of the whole answer and the newline after it; the default) or "first_token"
    (the paper's CE on the first answer token). Validation uses the same loss.

    ``valid_examples`` default: the last ``n_valid`` training examples, which are then not trained on.
    The returned model holds the theta of the best validation check (the initial theta included).
    """
    # every argument is checked before the model is touched (extraction runs the model, injection wraps it)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    loss_fn = LOSSES[loss]
    config = _check_new_adapter(model, config, adapter_name)
    check_count("steps", steps, minimum=0)
    check_positive("lr", lr)
    for name, value in (("batch_size", batch_size), ("eval_every", eval_every), ("n_valid", n_valid)):
        check_count(name, value)
    hint = " (soft injection trains on {'input', 'output'} word pairs, e.g. load_word_pairs(...).train)"
    train_examples = list(train_examples)
    check_columns(train_examples, ("input", "output"), "train_examples", hint)
    if valid_examples is None:
        if len(train_examples) <= n_valid:
            raise ValueError(
                f"{len(train_examples)} examples cannot spare n_valid={n_valid} for validation: pass valid_examples "
                "or a smaller n_valid"
            )
        train_examples, valid_examples = train_examples[:-n_valid], train_examples[-n_valid:]
    valid_examples = list(valid_examples)
    check_columns(valid_examples, ("input", "output"), "valid_examples", hint)
    if not train_examples or not valid_examples:
        raise ValueError("fit needs training and validation examples: both lists must be non-empty")
    valid_examples = valid_examples[:n_valid]
    if embedding is None:
        if len(train_examples) < config.n_shots + 1:
            raise ValueError(
                f"extracting the task embedding from {config.n_shots}-shot prompts needs at least {config.n_shots + 1} "
                f"training examples, got {len(train_examples)}: pass more, a smaller SoftInjectionConfig(n_shots=), "
                "or embedding="
            )
    else:
        _check_embedding(embedding, _embedding_shape(model, config))
    prompt = lambda example: few_shot_prompt(example["input"], template=config.template)  # noqa: E731
    targets = answer_targets if loss == "answer" else first_answer_token
    for part, examples in (("train_examples", train_examples), ("valid_examples", valid_examples)):
        for number, example in enumerate(examples):
            try:
                targets(tokenizer, prompt(example), example["output"])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{part}[{number}] cannot be trained on: {error}") from error
    valid_prompts, valid_answers = [prompt(e) for e in valid_examples], [e["output"] for e in valid_examples]

    if embedding is None:
        embedding = extract_task_embedding(
            model, tokenizer, train_examples, config.n_prompts, config.n_shots, config.template, seed=seed,
            site_template=config.site_template,
        )
    with unchanged_on_error(model):  # a failure while fitting leaves the caller's model as it was
        return _fit_theta(
            inject(model, embedding, config, adapter_name), tokenizer, train_examples, valid_prompts, valid_answers,
            prompt, loss_fn, steps, lr, batch_size, eval_every, seed, adapter_name,
        )


def _fit_theta(model, tokenizer, train_examples, valid_prompts, valid_answers, prompt, loss_fn, steps, lr, batch_size,
               eval_every, seed, adapter_name):
    model.eval()  # no dropout: the base is frozen, only theta learns
    thetas = [h.soft_injection_theta[adapter_name] for h in _holders(model, adapter_name)]
    optimizer = torch.optim.Adam(thetas, lr=lr)

    history = FitHistory()
    best = [t.detach().clone() for t in thetas]

    def check(step: int) -> None:
        value = _validation_loss(model, tokenizer, valid_prompts, valid_answers, batch_size, loss_fn)
        history.steps.append(step)
        history.valid_loss.append(value)
        if value < history.best_loss:
            history.best_loss, history.best_step = value, step
            for kept, theta in zip(best, thetas):
                kept.copy_(theta.detach())

    check(0)
    rng = random.Random(seed)
    bar = progress_bar(steps, "soft injection: fitting theta")
    for step in range(1, steps + 1):
        batch = rng.sample(train_examples, min(batch_size, len(train_examples)))
        value = loss_fn(model, tokenizer, [prompt(e) for e in batch], [e["output"] for e in batch])
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            check(step)
            bar.set_postfix(valid=f"{history.valid_loss[-1]:.3f}", best=f"{history.best_loss:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    with torch.no_grad():
        for theta, kept in zip(thetas, best):
            theta.copy_(kept)
    logger.info("soft injection: best validation loss %.4f at step %d", history.best_loss, history.best_step)
    return model, history
