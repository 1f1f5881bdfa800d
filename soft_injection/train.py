"""Fitting the mixing weights theta with the model frozen: CE on the first answer token at the last
prompt position, Adam (lr 0.2), validation every ``eval_every`` steps, and the best theta kept."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import headwise
from headwise.data import few_shot_prompt, left_padded_batch
from headwise.evaluate import first_answer_token

from .adapter import SoftInjectionLayer
from .config import SoftInjectionConfig
from .embedding import extract_task_embedding

__all__ = ["FitHistory", "fit", "inject", "set_task_embedding", "alpha_matrix", "first_token_loss"]

logger = logging.getLogger(__name__)


@dataclass
class FitHistory:
    """Validation loss at each check, and the step whose theta was kept."""

    steps: list[int] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_step: int = 0
    best_loss: float = float("inf")


def _holders(model, adapter_name: str) -> list[SoftInjectionLayer]:
    holders = [m for m in model.modules() if isinstance(m, SoftInjectionLayer) and adapter_name in m.head_index]
    if not holders:
        raise ValueError(f"the model has no soft-injection adapter named {adapter_name!r}")
    return holders


def set_task_embedding(model, embedding: torch.Tensor, adapter_name: str = "default") -> None:
    """Load an (L, H, head_dim) task embedding into a wrapped model's soft-injection adapter."""
    holders = _holders(model, adapter_name)
    config = model.peft_config[adapter_name]
    expected = (config.num_layers, config.num_heads, config.head_dim)
    if tuple(embedding.shape) != expected:
        raise ValueError(f"task embedding has shape {tuple(embedding.shape)}; this model needs (layers, heads, head_dim)={expected}")
    for holder in holders:
        index = holder.head_index[adapter_name]
        rows = embedding[holder.site.layer].to(index.device)[index]
        holder.soft_injection_embedding[adapter_name] = rows.float().clone()


def inject(model, embedding: torch.Tensor, config: SoftInjectionConfig | None = None, adapter_name: str = "default"):
    """Wrap ``model`` (or add an adapter to a wrapped one) and load ``embedding``; returns the PeftModel."""
    config = config or SoftInjectionConfig()
    if hasattr(model, "peft_config"):
        model.add_adapter(adapter_name, config)
        model.set_adapter(adapter_name)
    else:
        model = headwise.wrap(model, config, adapter_name=adapter_name)
    set_task_embedding(model, embedding, adapter_name)
    return model


def alpha_matrix(model, adapter_name: str = "default") -> torch.Tensor:
    """(L, H) alpha = sigmoid(theta) of a wrapped model (0 where a head is not injected)."""
    holders = _holders(model, adapter_name)
    config = model.peft_config[adapter_name]
    out = torch.zeros(config.num_layers, config.num_heads)
    with torch.no_grad():
        for holder in holders:
            out[holder.site.layer] = holder.alpha(adapter_name).cpu()
    return out


def first_token_loss(model, tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """Mean CE of the first answer token at each prompt's last position (left padding)."""
    device = next(model.parameters()).device
    logits = model(**left_padded_batch(tokenizer, prompts, device), logits_to_keep=1).logits[:, -1].float()
    return F.cross_entropy(logits, torch.tensor([first_answer_token(tokenizer, p, a) for p, a in zip(prompts, answers)], device=device))


@torch.no_grad()
def _validation_loss(model, tokenizer, prompts, answers, batch_size: int) -> float:
    total = 0.0
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        total += first_token_loss(model, tokenizer, prompts[chunk], answers[chunk]).item() * len(prompts[chunk])
    return total / len(prompts)


def fit(
    model, tokenizer, train_examples: Sequence[dict], valid_examples: Sequence[dict] | None = None,
    embedding: torch.Tensor | None = None, config: SoftInjectionConfig | None = None, steps: int = 400,
    lr: float = 0.2, batch_size: int = 8, eval_every: int = 50, n_valid: int = 100, seed: int = 0,
    adapter_name: str = "default",
):
    """Extract the task embedding (unless given), inject it, and fit theta. Returns ``(model, history)``.

    ``valid_examples`` default: the last ``n_valid`` training examples, which are then not trained on.
    The returned model holds the theta of the best validation check (the initial theta included).
    """
    config = config or SoftInjectionConfig()
    train_examples = list(train_examples)
    if valid_examples is None:
        train_examples, valid_examples = train_examples[:-n_valid], train_examples[-n_valid:]
    valid_examples = list(valid_examples)[:n_valid]
    if embedding is None:
        embedding = extract_task_embedding(
            model, tokenizer, train_examples, config.n_prompts, config.n_shots, config.template, seed=seed
        )
    model = inject(model, embedding, config, adapter_name)
    model.eval()  # no dropout: the base is frozen, only theta learns
    thetas = [h.soft_injection_theta[adapter_name] for h in _holders(model, adapter_name)]
    optimizer = torch.optim.Adam(thetas, lr=lr)
    prompt = lambda example: few_shot_prompt(example["input"], template=config.template)  # noqa: E731
    valid_prompts, valid_answers = [prompt(e) for e in valid_examples], [e["output"] for e in valid_examples]

    history = FitHistory()
    best = [t.detach().clone() for t in thetas]

    def check(step: int) -> None:
        loss = _validation_loss(model, tokenizer, valid_prompts, valid_answers, batch_size)
        history.steps.append(step)
        history.valid_loss.append(loss)
        if loss < history.best_loss:
            history.best_loss, history.best_step = loss, step
            for kept, theta in zip(best, thetas):
                kept.copy_(theta.detach())

    check(0)
    rng = random.Random(seed)
    for step in tqdm(range(1, steps + 1), desc="soft injection", leave=False):
        batch = rng.sample(train_examples, min(batch_size, len(train_examples)))
        loss = first_token_loss(model, tokenizer, [prompt(e) for e in batch], [e["output"] for e in batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            check(step)
    with torch.no_grad():
        for theta, kept in zip(thetas, best):
            theta.copy_(kept)
    logger.info("soft injection: best validation loss %.4f at step %d", history.best_loss, history.best_step)
    return model, history
