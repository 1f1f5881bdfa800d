"""Choosing heads and gamma for ZeroTuning without gradients.

``profile_heads`` sets gamma (default 2) on one head index in every layer at a time and measures a
score against the baseline: up-effective heads gain from more attention to the initial token,
down-effective heads from less. ``calibrate`` grid-searches one shared gamma for the chosen heads,
either on a supervised score (e.g. validation accuracy) or, with no labels, on minus the mean output
entropy (see ``entropy_score``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from headwise.experiments.data import left_padded_batch
from headwise.experiments.evaluate import label_logprobs
from headwise.heads import HeadList
from headwise.transaction import unchanged_on_error

from .adapter import ZeroTuningLayer, ZeroTuningModel
from headwise.progress import progress

__all__ = [
    "DEFAULT_GAMMAS", "HeadProfile", "set_gamma", "profile_heads", "calibrate", "label_accuracy_score",
    "entropy_score",
]

logger = logging.getLogger(__name__)

DEFAULT_GAMMAS = (0.3, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0, 4.5, 6.5)
Score = Callable[[torch.nn.Module], float]


def _holders(model, adapter_name: str) -> list[ZeroTuningLayer]:
    tuner = getattr(model, "base_model", None)
    if not isinstance(tuner, ZeroTuningModel) or adapter_name not in tuner.peft_config:
        raise ValueError(f"the model has no ZeroTuning adapter named {adapter_name!r}: wrap it with ZeroTuningConfig first")
    return tuner.holders_of(adapter_name)


def _check_gamma(model, gamma, adapter_name: str) -> list[ZeroTuningLayer]:
    """Every check of ``set_gamma``, run before anything is set; returns the adapter's holders."""
    holders = _holders(model, adapter_name)
    values = list(gamma.values()) if isinstance(gamma, dict) else [gamma]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"gamma must be a finite number > 0, got {value!r}")
    if isinstance(gamma, dict):
        held = {(h.site.layer, head) for h in holders for head in h.head_index[adapter_name].tolist()}
        for key in gamma:
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in key)):
                raise ValueError(f"set_gamma takes {{(layer, head): gamma}} with integer layer and head, got the key {key!r}")
        unknown = sorted(set(gamma) - held)
        if unknown:
            raise ValueError(
                f"heads {unknown[:5]} are not in the ZeroTuning adapter {adapter_name!r}; wrap with "
                "ZeroTuningConfig(heads=[...]) that includes them (or heads='all')"
            )
    return holders


def _log_gammas(model, adapter_name: str) -> list[torch.Tensor]:
    """The adapter's ln(gamma) parameters: what the search helpers put back when they fail."""
    return [holder.zerotuning_log_gamma[adapter_name] for holder in _holders(model, adapter_name)]


@torch.no_grad()
def set_gamma(model, gamma: float | dict[tuple[int, int], float], adapter_name: str = "default") -> None:
    """Set gamma of every head of the adapter (a number) or of some heads ({(layer, head): gamma}, others 1).

    Every value must be a finite number > 0 and every head one the adapter holds; nothing is set otherwise."""
    _check_gamma(model, gamma, adapter_name)
    config = model.peft_config[adapter_name]
    log_gamma = torch.full((config.num_layers, config.num_heads), 0.0 if isinstance(gamma, dict) else math.log(gamma))
    for (layer, head), value in (gamma.items() if isinstance(gamma, dict) else ()):
        log_gamma[layer, head] = math.log(value)
    model.base_model.write_heads(adapter_name, log_gamma, lambda holder, rows: holder.zerotuning_log_gamma[adapter_name].copy_(rows))


def _check_score(score) -> None:
    if not callable(score):
        raise TypeError(
            f"score must be a function of the model returning a number (e.g. zerotuning.entropy_score(tokenizer, prompts)), "
            f"got {type(score).__name__}"
        )


def _number(value, gamma: float) -> float:
    """A score as a float; a score that is no number (or NaN) cannot rank gammas."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or math.isnan(number):
        raise ValueError(f"score returned {value!r} at gamma={gamma}: it must return a number, higher is better")
    return number


def _checked_heads(model, heads, adapter_name: str) -> list[tuple[int, int]] | None:
    """``heads`` as a list of (layer, head) pairs the adapter holds (None: every head of the adapter)."""
    if heads is None:
        return None
    if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__"):
        raise ValueError(f"heads must be a list of (layer, head) pairs (or None for all of the adapter's), got {heads!r}")
    pairs = [tuple(pair) if isinstance(pair, (list, tuple)) else pair for pair in heads]
    if not pairs:
        raise ValueError("heads is empty: name at least one (layer, head) pair, or pass heads=None for all of the adapter's")
    _check_gamma(model, {pair: 1.0 for pair in pairs}, adapter_name)
    return pairs


@dataclass
class HeadProfile:
    """Score change per head index (or per (layer, head)) when its gamma is set to ``gamma``."""

    scores: torch.Tensor  # (H,) by head index, or (L, H) by head
    baseline: float
    gamma: float

    def ranked(self) -> list:
        """Head indices (or (layer, head) pairs), most helpful first."""
        flat = self.scores.flatten()
        order = torch.argsort(flat, descending=True, stable=True).tolist()
        if self.scores.dim() == 1:
            return order
        num_heads = self.scores.shape[1]
        return [(i // num_heads, i % num_heads) for i in order]

    @property
    def up_effective(self) -> list:
        return [h for h in self.ranked() if float(self.scores.flatten()[self._flat(h)]) > 0]

    @property
    def down_effective(self) -> list:
        return [h for h in reversed(self.ranked()) if float(self.scores.flatten()[self._flat(h)]) < 0]

    def _flat(self, head) -> int:
        return head if isinstance(head, int) else head[0] * self.scores.shape[1] + head[1]

    def heads(self, fraction: float, num_layers: int) -> HeadList:
        """(layer, head) pairs of the dominant kind: the top ``fraction`` of the up- (or down-) effective
        head indices, whichever kind moves the score more, in every layer."""
        up, down = self.up_effective, self.down_effective
        gain = lambda hs: sum(abs(float(self.scores.flatten()[self._flat(h)])) for h in hs)  # noqa: E731
        chosen = up if gain(up) >= gain(down) else down
        if not chosen:
            raise ValueError("no head moved the score at this gamma: profile with a smoother score or more data")
        chosen = chosen[: max(1, round(fraction * len(chosen)))]
        if self.scores.dim() == 1:
            return [(layer, h) for layer in range(num_layers) for h in sorted(chosen)]
        return sorted(chosen)

    def plot(self, path, title: str = "ZeroTuning head profile"):
        from headwise.experiments.plots import plot_head_scores

        by_index = self.scores.dim() == 1
        scores = self.scores[None] if by_index else self.scores
        rows = ["every layer"] if by_index else None
        return plot_head_scores(scores, path, title=title, label=f"score change at gamma={self.gamma}", rows=rows)


def profile_heads(model, score: Score, gamma: float = 2.0, by: str = "index", adapter_name: str = "default") -> HeadProfile:
    """Profile a model wrapped with ``ZeroTuningConfig(heads='all')`` (gamma 1 everywhere after).

    Every argument is checked before a gamma is set; if ``score`` fails, the gammas are put back as they were."""
    if by not in ("index", "head"):
        raise ValueError(f"by must be 'index' or 'head', got {by!r}")
    _check_score(score)
    holders = _check_gamma(model, gamma, adapter_name)
    num_layers = model.peft_config[adapter_name].num_layers
    num_heads = holders[0].num_heads
    if by == "index":
        candidates = [[(layer, h) for layer in range(num_layers)] for h in range(num_heads)]
    else:
        candidates = [[(layer, h)] for layer in range(num_layers) for h in range(num_heads)]
    _check_gamma(model, {pair: gamma for heads in candidates for pair in heads}, adapter_name)  # all in the adapter
    with unchanged_on_error(model, values=_log_gammas(model, adapter_name)):
        set_gamma(model, 1.0, adapter_name)
        baseline = _number(score(model), 1.0)
        results = []
        for heads in progress(candidates, "profiling heads"):
            set_gamma(model, {pair: gamma for pair in heads}, adapter_name)
            results.append(_number(score(model), gamma) - baseline)
        set_gamma(model, 1.0, adapter_name)
    scores = torch.tensor(results)
    return HeadProfile(scores if by == "index" else scores.view(num_layers, num_heads), baseline, gamma)


def calibrate(
    model, score: Score, gammas: Sequence[float] = DEFAULT_GAMMAS, heads: HeadList | None = None,
    adapter_name: str = "default",
) -> tuple[float, dict[float, float]]:
    """Grid search of one gamma for ``heads`` (default: all heads of the adapter), maximising ``score``.

    Leaves the best gamma set on the model; returns it and the score of every gamma tried. The whole grid
    and the heads are checked before a gamma is set; if ``score`` fails, the gammas are put back as they were.
    """
    _check_score(score)
    _holders(model, adapter_name)
    if isinstance(gammas, (str, bytes)) or not hasattr(gammas, "__iter__"):
        raise ValueError(f"gammas must be a list of numbers > 0 (e.g. zerotuning.DEFAULT_GAMMAS), got {gammas!r}")
    gammas = list(gammas)
    if not gammas:
        raise ValueError("gammas is empty: give at least one gamma to try (e.g. zerotuning.DEFAULT_GAMMAS)")
    for number, gamma in enumerate(gammas):
        try:
            _check_gamma(model, gamma, adapter_name)
        except ValueError as error:
            raise ValueError(f"gammas[{number}]: {error}; nothing was set") from None
    heads = _checked_heads(model, heads, adapter_name)
    setting = (lambda g: {pair: g for pair in heads}) if heads is not None else (lambda g: g)  # noqa: E731
    table = {}
    with unchanged_on_error(model, values=_log_gammas(model, adapter_name)):
        for gamma in progress(gammas, desc="calibrating gamma"):
            set_gamma(model, setting(gamma), adapter_name)
            table[gamma] = _number(score(model), gamma)
        best = max(table, key=lambda g: (table[g], -abs(math.log(g))))  # ties: the gentler gamma
        set_gamma(model, setting(best), adapter_name)
    logger.info("ZeroTuning calibration: gamma=%s, score %.4f", best, table[best])
    return best, table


def label_accuracy_score(tokenizer, prompts: Sequence[str], labels: Sequence[int], label_words: Sequence[str], batch_size: int = 8) -> Score:
    """Supervised score: label-constrained accuracy (argmax over the label words' log-probabilities),
    ties broken by the mean log-probability of the correct label among the label words (weight 1e-3),
    so that small validation sets still rank heads and gammas."""
    targets = torch.tensor(list(labels))

    def score(model) -> float:
        logp = label_logprobs(model, tokenizer, prompts, label_words, batch_size).log_softmax(-1)
        accuracy = (logp.argmax(-1) == targets).float().mean().item()
        return accuracy + 1e-3 * logp[torch.arange(len(targets)), targets].mean().item()

    return score


def entropy_score(tokenizer, prompts: Sequence[str], label_words: Sequence[str] | None = None, batch_size: int = 8) -> Score:
    """Unsupervised score: minus the mean entropy (nats) of the next-token distribution at the last prompt
    position, renormalised over the label words (every surface form, ``label_logprobs``) when given, else
    over the whole vocabulary."""

    @torch.no_grad()
    def score(model) -> float:
        if label_words:
            logp = label_logprobs(model, tokenizer, prompts, label_words, batch_size).log_softmax(-1)
            return (logp.exp() * logp).sum(-1).mean().item()
        device = next(model.parameters()).device
        total = 0.0
        for start in range(0, len(prompts), batch_size):
            batch = left_padded_batch(tokenizer, prompts[start:start + batch_size], device)
            logp = model(**batch, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)
            total += -(logp.exp() * logp).sum(-1).sum().item()
        return -total / len(prompts)

    return score
