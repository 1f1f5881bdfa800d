"""headwise.experiments.evaluate against one-prompt-at-a-time loops written out here (no padding, no batching)."""

import pytest
import torch

from headwise.experiments.evaluate import (
    first_token_accuracy, generated_label_accuracy, greedy_exact_match, label_accuracy, label_constrained_accuracy,
    label_logprobs, label_variants, label_word_ids,
)
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

PROMPTS = ["w5 w17 w33 w8 A :", "w9 w23 A :", "w30 w6 w19 w27 w40 w2 w11 A :", "w44 A :", "w12 w13 w14 A :"]
LABEL_WORDS = ["w1", "w2", "w3"]


@pytest.fixture(scope="module")
def setup():
    return tiny_model("llama", seed=3), tiny_tokenizer()


def _alone(model, tokenizer, prompt, new_tokens=0):
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
        out = model.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0) if new_tokens else None
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) if new_tokens else None
    return logits, text


def test_label_logprobs_match_each_prompt_alone(setup):
    model, tokenizer = setup
    ids = label_word_ids(tokenizer, LABEL_WORDS)
    batched = label_logprobs(model, tokenizer, PROMPTS, LABEL_WORDS, batch_size=2)
    assert batched.shape == (len(PROMPTS), len(LABEL_WORDS))
    for row, prompt in enumerate(PROMPTS):
        logits, _ = _alone(model, tokenizer, prompt)
        torch.testing.assert_close(batched[row], logits.log_softmax(-1)[ids], atol=1e-5, rtol=1e-5)


def test_label_accuracy_scores_both_ways_like_a_plain_loop(setup):
    model, tokenizer = setup
    ids = label_word_ids(tokenizer, LABEL_WORDS)
    alone = [_alone(model, tokenizer, p, new_tokens=3) for p in PROMPTS]
    choices = [int(logits[ids].argmax()) for logits, _ in alone]
    first_words = [(text.split() or [""])[0] for _, text in alone]
    # labels: the model's own label choice for the first three prompts, a wrong one for the rest
    labels = choices[:3] + [(c + 1) % 3 for c in choices[3:]]
    result = label_accuracy(model, tokenizer, PROMPTS, labels, LABEL_WORDS, batch_size=2)
    assert result.constrained == pytest.approx(3 / 5)
    expected_invalid = sum(w not in LABEL_WORDS for w in first_words) / 5
    expected_generated = sum(w in LABEL_WORDS and LABEL_WORDS.index(w) == y for w, y in zip(first_words, labels)) / 5
    assert result.not_a_label == pytest.approx(expected_invalid)
    assert result.generated == pytest.approx(expected_generated)
    assert label_constrained_accuracy(model, tokenizer, PROMPTS, labels, LABEL_WORDS) == pytest.approx(result.constrained)
    assert generated_label_accuracy(model, tokenizer, PROMPTS, labels, LABEL_WORDS) == pytest.approx(
        (result.generated, result.not_a_label)
    )


def test_generated_accuracy_counts_label_words_the_model_writes():
    """Label words = what the model writes first, so the generation path must score 1.0 with nothing invalid."""
    model, tokenizer = tiny_model("llama", seed=3), tiny_tokenizer()
    first_words = [(_alone(model, tokenizer, p, new_tokens=1)[1].split() or [""])[0] for p in PROMPTS]
    words = list(dict.fromkeys(first_words))
    if len(words) < 2:
        words.append("w79" if words[0] != "w79" else "w78")
    labels = [words.index(w) for w in first_words]
    result = label_accuracy(model, tokenizer, PROMPTS, labels, words, batch_size=3)
    assert (result.generated, result.not_a_label, result.constrained) == (1.0, 0.0, 1.0)


def test_first_token_accuracy_and_exact_match_against_the_models_own_answers(setup):
    model, tokenizer = setup
    answers = [_alone(model, tokenizer, p, new_tokens=2)[1] for p in PROMPTS]
    assert first_token_accuracy(model, tokenizer, PROMPTS, answers, batch_size=2) == 1.0
    assert greedy_exact_match(model, tokenizer, PROMPTS, answers, batch_size=2, max_new_tokens=2) == 1.0
    wrong = ["w79 w78" if a.split()[0] != "w79" else "w77 w78" for a in answers]
    assert first_token_accuracy(model, tokenizer, PROMPTS, wrong, batch_size=2) == 0.0
    assert greedy_exact_match(model, tokenizer, PROMPTS, wrong, batch_size=2, max_new_tokens=2) == 0.0


def test_label_words_sharing_a_first_token_are_refused(setup):
    _, tokenizer = setup
    with pytest.raises(ValueError, match="share a first token"):
        label_word_ids(tokenizer, ["w1 w2", "w1 w3"])


def test_label_variants_cover_case_and_spacing_and_drop_unknown_forms(setup):
    _, tokenizer = setup
    ids = lambda word: tuple(tokenizer(word, add_special_tokens=False)["input_ids"])  # noqa: E731
    variants = label_variants(tokenizer, ["yes", "no", "w1 w2"])
    assert variants[0] == [ids("yes"), ids("Yes")]  # " yes" and "yes" are one form for a word-level vocabulary
    assert variants[1] == [ids("no")]  # "No" is not in the vocabulary: an <unk> form is dropped
    assert variants[2] == [ids("w1 w2")] and len(variants[2][0]) == 2


def test_label_logprobs_add_surface_forms_and_score_multi_token_words_in_full(setup):
    model, tokenizer = setup
    yes, cap_yes, w1, w2 = (tokenizer.convert_tokens_to_ids(t) for t in ("yes", "Yes", "w1", "w2"))
    scores = label_logprobs(model, tokenizer, PROMPTS, ["yes", "w1 w2"], batch_size=2)
    for row, prompt in enumerate(PROMPTS):
        logp = _alone(model, tokenizer, prompt)[0].log_softmax(-1)
        after_w1 = _alone(model, tokenizer, prompt + " w1")[0].log_softmax(-1)
        expected = torch.stack([torch.logaddexp(logp[yes], logp[cap_yes]), logp[w1] + after_w1[w2]])
        torch.testing.assert_close(scores[row], expected, atol=1e-4, rtol=1e-4)


def test_a_label_written_in_another_case_is_scored():
    """The model writes 'Yes' after every prompt; label-constrained scoring must count it for the label 'yes'
    (scoring only ' yes' let free generation beat the constrained score)."""
    model, tokenizer = tiny_model("llama", seed=3), tiny_tokenizer()
    cap_yes = tokenizer.convert_tokens_to_ids("Yes")
    with torch.no_grad():
        last = torch.stack([model.model(input_ids=torch.tensor([tokenizer(p)["input_ids"]])).last_hidden_state[0, -1] for p in PROMPTS])
        model.lm_head.weight[cap_yes] = torch.linalg.pinv(last) @ torch.full((len(PROMPTS),), 100.0)  # logit 100 everywhere
    result = label_accuracy(model, tokenizer, PROMPTS, [0] * len(PROMPTS), ["yes", "w1"], batch_size=2)
    assert (result.generated, result.not_a_label, result.constrained) == (1.0, 0.0, 1.0)
    probs = label_logprobs(model, tokenizer, PROMPTS, ["yes", "w1"]).exp()
    assert (probs[:, 0] > 0.99).all()


def test_label_words_that_share_a_surface_form_are_refused(setup):
    _, tokenizer = setup
    with pytest.raises(ValueError, match="share the surface form"):
        label_variants(tokenizer, ["yes", "Yes"])
