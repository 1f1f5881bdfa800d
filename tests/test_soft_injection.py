"""Soft injection on tiny models: extraction, last-token/prefill-only injection, fitting, persistence."""

import copy

import pytest
import torch

import headwise
from headwise.experiments.data import few_shot_prompt, left_padded_batch
from soft_injection import (
    SoftInjectionConfig, SoftInjectionLayer, alpha_matrix, extract_task_embedding, extraction_prompts, fit, inject,
)
from tiny_models import ARCHS, hook_count, module_tree, tiny_model
from tiny_tokenizer import tiny_tokenizer

TOK = tiny_tokenizer()
EXAMPLES = [{"input": f"w{i}", "output": f"w{(i * 7 + 3) % 40 + 40}"} for i in range(40)]
PROMPTS = [few_shot_prompt("w3"), few_shot_prompt("w11", EXAMPLES[:2]), few_shot_prompt("w20", EXAMPLES[5:6])]


def set_theta(model, value, adapter="default"):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SoftInjectionLayer) and adapter in module.soft_injection_theta:
                module.soft_injection_theta[adapter].fill_(value)


def capture_o_proj_inputs(model):
    """{layer: list of captured inputs}, recorded after every other pre-hook (the edited input)."""
    captured, handles = {}, []
    for site in headwise.find_head_sites(model):
        handles.append(site.output.register_forward_pre_hook(lambda m, a, l=site.layer: captured.setdefault(l, []).append(a[0].detach().clone())))
    return captured, handles


def random_embedding(model, seed=0):
    sites = headwise.find_head_sites(model)
    return torch.randn(len(sites), sites[0].num_heads, sites[0].head_dim, generator=torch.Generator().manual_seed(seed))


def test_extraction_equals_a_hand_computed_mean():
    model = tiny_model("llama")
    embedding = extract_task_embedding(model, TOK, EXAMPLES, n_prompts=6, n_shots=3, batch_size=4, seed=1)
    captured, handles = capture_o_proj_inputs(model)
    with torch.no_grad():
        for prompt in extraction_prompts(EXAMPLES, 6, 3, seed=1):  # one by one, no padding
            model(**TOK(prompt, return_tensors="pt", add_special_tokens=False))
    for handle in handles:
        handle.remove()
    for layer in range(3):
        expected = torch.stack([x[0, -1] for x in captured[layer]]).mean(0).view(4, 8)
        assert torch.allclose(embedding[layer], expected, atol=1e-5)
    assert hook_count(model) == 0


def test_extraction_reads_the_heads_where_site_template_says():
    """A template names another module of the same width (here q_proj's input, the normed hidden
    state): extraction must read there, as the injecting config would edit there."""
    model = tiny_model("llama")
    template = "model.layers.{layer}.self_attn.q_proj"
    embedding = extract_task_embedding(model, TOK, EXAMPLES, n_prompts=4, n_shots=2, seed=2, site_template=template)
    captured, handles = {}, []
    for layer, block in enumerate(model.model.layers):
        handles.append(block.self_attn.q_proj.register_forward_pre_hook(lambda m, a, l=layer: captured.setdefault(l, []).append(a[0][0, -1].detach().clone())))
    with torch.no_grad():
        for prompt in extraction_prompts(EXAMPLES, 4, 2, seed=2):
            model(**TOK(prompt, return_tensors="pt", add_special_tokens=False))
    for handle in handles:
        handle.remove()
    for layer in range(3):
        assert torch.allclose(embedding[layer].flatten(), torch.stack(captured[layer]).mean(0), atol=1e-5)
    assert not torch.allclose(embedding, extract_task_embedding(model, TOK, EXAMPLES, n_prompts=4, n_shots=2, seed=2))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3"])
def test_alpha_one_replaces_only_the_last_token_of_each_row(arch):
    base = tiny_model(arch)
    batch = left_padded_batch(TOK, PROMPTS)
    captured_bare, handles = capture_o_proj_inputs(base)
    with torch.no_grad():
        base(**batch)
    for handle in handles:
        handle.remove()
    model = inject(base, random_embedding(base), SoftInjectionConfig())
    set_theta(model, float("inf"))  # alpha = 1
    captured, handles = capture_o_proj_inputs(model)
    with torch.no_grad():
        model(**batch)
    embedding = random_embedding(base)
    mask = batch["attention_mask"].bool()
    for layer in captured:
        ours, bare = captured[layer][0], captured_bare[layer][0]
        assert torch.allclose(ours[:, -1], embedding[layer].flatten().expand(len(PROMPTS), -1), atol=1e-6)
        earlier = mask[:, :-1]  # real tokens before the last: causal attention never sees the last one
        assert torch.allclose(ours[:, :-1][earlier], bare[:, :-1][earlier], atol=1e-5)


def test_alpha_zero_gives_the_base_model():
    ids = left_padded_batch(TOK, PROMPTS)
    with torch.no_grad():
        bare = tiny_model("llama")(**ids).logits
        model = inject(tiny_model("llama"), random_embedding(tiny_model("llama")))
        set_theta(model, float("-inf"))
        out = model(**ids).logits
    mask = ids["attention_mask"].bool()
    assert torch.allclose(out[mask], bare[mask], atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_injection_runs_on_the_prefill_pass_only(arch):
    model = inject(tiny_model(arch), random_embedding(tiny_model(arch)))
    set_theta(model, 2.0)
    batch = left_padded_batch(TOK, PROMPTS)
    with torch.no_grad():
        prefill = model(**batch, use_cache=True)
        next_ids = prefill.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(next_ids)], dim=1)
        step = dict(input_ids=next_ids, attention_mask=mask, use_cache=True)
        ours = model(**step, cache=copy.deepcopy(prefill.cache)).logits
        with model.disable_adapter():  # same (injected) cache, no injection at this step
            reference = model(**step, cache=copy.deepcopy(prefill.cache)).logits
            bare_prefill = model(**batch, use_cache=True)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not torch.allclose(prefill.logits[:, -1], bare_prefill.logits[:, -1], atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gemma2"])
def test_batched_equals_one_by_one_in_logits_and_generation(arch):
    model = inject(tiny_model(arch), random_embedding(tiny_model(arch)))
    set_theta(model, 0.5)
    batch = left_padded_batch(TOK, PROMPTS)
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)[:, batch["input_ids"].shape[1]:]
        for row, prompt in enumerate(PROMPTS):
            single = TOK(prompt, return_tensors="pt", add_special_tokens=False)
            assert torch.allclose(model(**single).logits[0, -1], batched[row], atol=1e-5)
            alone = model.generate(**single, max_new_tokens=4, do_sample=False, pad_token_id=0)[0, single["input_ids"].shape[1]:]
            assert torch.equal(alone, generated[row])


def test_gradients_reach_theta_only():
    model = inject(tiny_model("llama"), random_embedding(tiny_model("llama")))
    from soft_injection import first_token_loss

    first_token_loss(model, TOK, PROMPTS, ["w41", "w42", "w43"]).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all("soft_injection_theta" in n for n in with_grad)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == with_grad
    assert headwise.trainable_parameters(model)["trainable"] == 3 * 4


@pytest.mark.parametrize("loss", ["answer", "first_token"])
def test_fit_keeps_the_best_theta_and_lowers_the_validation_loss(loss):
    from soft_injection.train import LOSSES, _validation_loss

    train, valid = EXAMPLES[:30], EXAMPLES[30:]
    model, history = fit(
        tiny_model("llama"), TOK, train, valid, config=SoftInjectionConfig(n_prompts=8, n_shots=4),
        steps=30, lr=2.0, batch_size=8, eval_every=3, loss=loss,  # a large lr makes the validation loss jump around
    )
    prompts, answers = [few_shot_prompt(e["input"]) for e in valid], [e["output"] for e in valid]
    final = _validation_loss(model, TOK, prompts, answers, batch_size=8, loss_fn=LOSSES[loss])
    assert final == pytest.approx(min(history.valid_loss), abs=1e-5)
    assert history.best_loss == min(history.valid_loss) < history.valid_loss[0]
    assert history.valid_loss[-1] != min(history.valid_loss) or history.best_step == history.steps[-1]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_answer_loss_is_the_nll_of_answer_and_newline_with_the_mix_at_the_prompt_end(arch):
    """Reference: the bare model on prompt + answer + newline in one pass, a hand hook mixing the task
    embedding into the last prompt token only; answer_loss runs batched, left-padded, through the cache."""
    from soft_injection import answer_loss

    embedding = random_embedding(tiny_model(arch))
    model = inject(tiny_model(arch), embedding)
    set_theta(model, 0.7)
    answers = ["w41 w42", "w43", "w44 w45 w46"]
    loss = answer_loss(model, TOK, PROMPTS, answers)
    alpha, base, nlls = torch.sigmoid(torch.tensor(0.7)), tiny_model(arch), []
    for prompt, answer in zip(PROMPTS, answers):
        prompt_ids = TOK(prompt, add_special_tokens=False)["input_ids"]
        full = TOK(prompt + " " + answer + "\n", add_special_tokens=False)["input_ids"]
        last = len(prompt_ids) - 1
        handles = []
        for site in headwise.find_head_sites(base):
            def mix(module, args, layer=site.layer):
                heads = args[0].unflatten(-1, embedding.shape[1:]).clone()
                heads[:, last] = (1 - alpha) * heads[:, last] + alpha * embedding[layer]
                return (heads.flatten(-2),)
            handles.append(site.output.register_forward_pre_hook(mix))
        with torch.no_grad():
            logp = base(input_ids=torch.tensor([full])).logits[0].log_softmax(-1)
        for handle in handles:
            handle.remove()
        targets = torch.tensor(full[len(prompt_ids):])
        assert len(targets) == len(answer.split()) + 1  # the answer's words and the newline
        nlls.append(-logp[last:-1].gather(-1, targets[:, None]).sum())
    torch.testing.assert_close(loss, torch.stack(nlls).mean(), atol=1e-4, rtol=1e-4)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "theta" in n)


def test_save_load_round_trip_with_the_embedding(tmp_path):
    model = inject(tiny_model("llama"), random_embedding(tiny_model("llama")), SoftInjectionConfig(template="Input: {input}\nOutput:"))
    set_theta(model, 1.5)
    batch = left_padded_batch(TOK, PROMPTS)
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    loaded = headwise.from_pretrained(tiny_model("llama"), tmp_path)
    assert loaded.peft_config["default"].template == "Input: {input}\nOutput:"
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expected)
    assert torch.allclose(alpha_matrix(loaded), torch.sigmoid(torch.tensor(1.5)).expand(3, 4))


def test_two_tasks_are_two_named_adapters():
    base = tiny_model("llama")
    batch = left_padded_batch(TOK, PROMPTS)
    model = inject(base, random_embedding(base, seed=1), adapter_name="task_a")
    model = inject(model, random_embedding(base, seed=2), adapter_name="task_b")
    with torch.no_grad():
        out_b = model(**batch).logits
        model.set_adapter("task_a")
        out_a = model(**batch).logits
    assert not torch.allclose(out_a, out_b)
    reference = inject(tiny_model("llama"), random_embedding(base, seed=1))
    with torch.no_grad():
        assert torch.allclose(reference(**batch).logits, out_a, atol=1e-6)


def test_wrong_embedding_shape_and_merge_are_clear_errors():
    model = inject(tiny_model("llama"), random_embedding(tiny_model("llama")))
    from soft_injection import set_task_embedding

    with pytest.raises(ValueError, match=r"\(layers, heads, head_dim\)=\(3, 4, 8\)"):
        set_task_embedding(model, torch.zeros(3, 4, 9))
    with pytest.raises(TypeError, match="cannot be merged"):
        model.merge_and_unload()
    tree = module_tree(model.base_model.model)
    assert "model.layers.0.self_attn.headwise_soft_injection" in dict(tree)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_right_padded_rows_equal_each_row_alone(arch, attention):
    """Each row is injected at its own last real token, whatever the padding side."""
    model = inject(tiny_model(arch), random_embedding(tiny_model(arch)))
    model.base_model.model.set_attn_implementation(attention)
    set_theta(model, 1.5)
    side, TOK.padding_side = TOK.padding_side, "right"
    try:
        batch = TOK(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        TOK.padding_side = side
    assert (batch["attention_mask"][:, -1] == 0).any()  # some row is right-padded
    with torch.no_grad():
        batched = model(**batch).logits
        for row, prompt in enumerate(PROMPTS):
            alone = model(**TOK(prompt, return_tensors="pt", add_special_tokens=False)).logits[0]
            length = alone.shape[0]
            torch.testing.assert_close(batched[row, :length], alone, atol=1e-4, rtol=1e-4)
