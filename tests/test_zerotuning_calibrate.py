"""ZeroTuning head profiling and gamma calibration on tiny models."""

import pytest
import torch

import headwise
from zerotuning import ZeroTuningConfig, calibrate, entropy_score, label_accuracy_score, profile_heads, set_gamma
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

IDS = torch.tensor([[5, 17, 33, 8, 41, 12], [9, 23, 4, 30, 6, 19]])


def closeness_to(target):
    def score(model):
        with torch.no_grad():
            return -(model(input_ids=IDS).logits - target).abs().mean().item()
    return score


def test_profiling_ranks_a_planted_head_first():
    model = headwise.wrap(tiny_model("llama"), ZeroTuningConfig(heads="all"))
    set_gamma(model, {(layer, 2): 2.0 for layer in range(3)})  # plant: head index 2 at gamma 2 is "right"
    with torch.no_grad():
        target = model(input_ids=IDS).logits
    profile = profile_heads(model, closeness_to(target), gamma=2.0)
    assert profile.ranked()[0] == 2
    assert profile.scores[2] > 0 and profile.scores.shape == (4,)
    assert profile.up_effective == [2] and sorted(profile.down_effective) == [0, 1, 3]
    # the down-effective kind moves the score more in total here, so it is the one to tune
    assert profile.heads(1.0, num_layers=3) == [(layer, h) for layer in range(3) for h in (0, 1, 3)]
    by_head = profile_heads(model, closeness_to(target), gamma=2.0, by="head")
    assert by_head.scores.shape == (3, 4) and by_head.ranked()[0][1] == 2


def test_calibration_picks_what_a_brute_force_loop_picks():
    ids = IDS
    model = headwise.wrap(tiny_model("gpt2"), ZeroTuningConfig(heads=[(0, 1), (2, 3)]))
    set_gamma(model, 3.0)
    with torch.no_grad():
        target = model(input_ids=ids).logits
    score = closeness_to(target)
    grid = (0.5, 1.0, 2.0, 3.0, 4.5)
    brute = {}
    for gamma in grid:
        set_gamma(model, gamma)
        brute[gamma] = score(model)
    best, table = calibrate(model, score, grid)
    assert best == max(brute, key=brute.get) == 3.0
    assert table == pytest.approx(brute)
    assert torch.allclose(next(p for n, p in model.named_parameters() if "log_gamma" in n), torch.log(torch.tensor(3.0)))


def test_label_and_entropy_scores_equal_a_hand_computation():
    """Both scores against plain forward passes, one prompt at a time: label words w40 / w41 are one token each."""
    tok = tiny_tokenizer()
    prompts, labels = ["Q: w1\nA:", "Q: w2 w3\nA:", "Q: w4\nA:"], [0, 1, 0]
    model = headwise.wrap(tiny_model("llama"), ZeroTuningConfig(heads="all", gamma=2.0))
    ids = [tok.convert_tokens_to_ids(w) for w in ("w40", "w41")]
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            logits = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
            rows.append(logits.log_softmax(-1)[ids].log_softmax(-1))  # renormalised over the two labels
    rows = torch.stack(rows)
    expected_accuracy = (rows.argmax(-1) == torch.tensor(labels)).float().mean().item()
    expected_accuracy += 1e-3 * rows[torch.arange(3), torch.tensor(labels)].mean().item()
    expected_entropy = (rows.exp() * rows).sum(-1).mean().item()  # minus the mean entropy
    assert label_accuracy_score(tok, prompts, labels, ["w40", "w41"])(model) == pytest.approx(expected_accuracy, abs=1e-6)
    entropy = entropy_score(tok, prompts, ["w40", "w41"])
    assert entropy(model) == pytest.approx(expected_entropy, abs=1e-6)
    best, table = calibrate(model, entropy, (0.5, 1.0, 2.0))
    assert table[best] == max(table.values())
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        set_gamma(model, 0.0)
