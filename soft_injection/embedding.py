"""The task embedding: each head's output at the last prompt token, averaged over few-shot prompts."""

from __future__ import annotations

import random
from typing import Sequence

import torch

from headwise.experiments.data import QA_TEMPLATE, check_columns, few_shot_prompt, left_padded_batch
from headwise.sites import find_head_sites
from headwise.statistics import capturing_head_inputs
from headwise.progress import progress
from headwise.transaction import check_count

__all__ = ["extraction_prompts", "extract_task_embedding"]


def extraction_prompts(
    examples: Sequence[dict], n_prompts: int = 50, n_shots: int = 10, template: str = QA_TEMPLATE, seed: int = 0
) -> list[str]:
    """``n_prompts`` prompts of ``n_shots`` demonstrations and a query, drawn without repeats inside a prompt."""
    check_count("n_prompts", n_prompts)
    check_count("n_shots", n_shots, minimum=0)
    examples = list(examples)
    check_columns(examples, ("input", "output"), "examples")
    if len(examples) < n_shots + 1:
        raise ValueError(f"{n_shots}-shot prompts need at least {n_shots + 1} examples, got {len(examples)}")
    rng = random.Random(seed)
    prompts = []
    for _ in range(n_prompts):
        *demos, query = rng.sample(examples, n_shots + 1)
        prompts.append(few_shot_prompt(query["input"], demos, template))
    return prompts


@torch.no_grad()
def extract_task_embedding(
    model, tokenizer, examples: Sequence[dict], n_prompts: int = 50, n_shots: int = 10,
    template: str = QA_TEMPLATE, batch_size: int = 8, seed: int = 0, site_template: str | None = None,
) -> torch.Tensor:
    """(L, H, head_dim) fp32 mean of the head outputs (o_proj input) at the last prompt token.

    Every adapter of a wrapped model is off during extraction. Prompts are batched with left padding.
    ``site_template``: where the head outputs are, for a model outside the architecture table (the
    same value the injecting ``SoftInjectionConfig`` carries).
    """
    check_count("batch_size", batch_size)
    prompts = extraction_prompts(examples, n_prompts, n_shots, template, seed)
    sites = find_head_sites(model, site_template)
    sums = torch.zeros(len(sites), sites[0].num_heads * sites[0].head_dim, dtype=torch.float64)
    device = next(model.parameters()).device

    def capture(layer, x):
        sums[layer] += x[:, -1].double().sum(0).cpu()

    with capturing_head_inputs(model, capture, site_template):
        for start in progress(range(0, len(prompts), batch_size), "task embedding"):
            model(**left_padded_batch(tokenizer, prompts[start:start + batch_size], device))
    return (sums / len(prompts)).float().view(len(sites), sites[0].num_heads, sites[0].head_dim)
