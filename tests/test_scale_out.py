"""Scale-out on this CPU: bitsandbytes 4-bit/8-bit bases, activation checkpointing, bf16 Trainer."""

import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

import headwise
from headwise.experiments.data import PaddingCollator
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig, first_token_loss, set_task_embedding
from test_trainer import toy_task
from tiny_models import VOCAB, tiny_model
from tiny_tokenizer import tiny_tokenizer
from zerotuning import ZeroTuningConfig

METHODS = {
    "lofit": lambda: LofitConfig(heads="all", use_scale=True, init_std=0.05),
    "soft_injection": lambda: SoftInjectionConfig(heads="all"),
    "zerotuning": lambda: ZeroTuningConfig(heads="all", gamma=1.5),
}
SIZE = dict(hidden_size=64, intermediate_size=128)
TOK = tiny_tokenizer()


def prepare(model, method):
    if method == "soft_injection":
        set_task_embedding(model, torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0)))
    return model


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    tiny_model("llama", **SIZE).save_pretrained(path)
    return path


def quantized(base_dir, bits):
    pytest.importorskip("bitsandbytes")  # a test extra: installed by `make test`; only these tests need it
    config = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        if bits == 4 else BitsAndBytesConfig(load_in_8bit=True)
    )
    return AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=config, device_map="cpu", attn_implementation="sdpa")


def _adapter_loss(model, method) -> float:
    with torch.no_grad():
        if method == "soft_injection":
            return first_token_loss(model, TOK, ["Q: w1\nA:", "Q: w2 w3\nA:"], ["w40", "w41"]).item()
        return model(**PaddingCollator(0)(list(toy_task(24)))).loss.item()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_quantized_base_trains_with_plain_trainer_and_takes_full_precision_adapters(base_dir, bits, method, tmp_path):
    base = quantized(base_dir, bits)
    o_proj = base.model.layers[0].self_attn.o_proj
    assert type(o_proj).__name__ == ("Linear4bit" if bits == 4 else "Linear8bitLt")  # really quantized
    assert type(o_proj.weight).__name__ == ("Params4bit" if bits == 4 else "Int8Params")
    model = prepare(headwise.wrap(base, METHODS[method]()), method)
    loss_before = _adapter_loss(model, method)
    if method == "soft_injection":  # its objective is the first answer token at the last prompt position
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.2)
        for _ in range(5):
            optimizer.zero_grad()
            first_token_loss(model, TOK, ["Q: w1\nA:", "Q: w2 w3\nA:"], ["w40", "w41"]).backward()
            optimizer.step()
    else:
        args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=12, per_device_train_batch_size=8, learning_rate=5e-2,
                                 report_to=[], use_cpu=True, save_strategy="no", remove_unused_columns=False)
        Trainer(model=model, args=args, train_dataset=toy_task(24), data_collator=PaddingCollator(0)).train()  # Trainer accepts it
    assert _adapter_loss(model, method) < loss_before  # the loss falls on a quantized base

    full = prepare(headwise.wrap(AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="sdpa"), METHODS[method]()), method)
    full.save_pretrained(tmp_path / "full")
    onto_quantized = headwise.from_pretrained(quantized(base_dir, bits), tmp_path / "full")
    expected = {n: p for n, p in full.named_parameters() if "_" + "default" in n or n.endswith(".default")}
    loaded = dict(onto_quantized.named_parameters())
    assert expected and all(torch.equal(loaded[n], p) for n, p in expected.items())

    # and back: the adapter trained on the quantized base, onto the full-precision base, acts exactly as its
    # trained values do there (compared with the same values set by hand on a full-precision wrap)
    model.save_pretrained(tmp_path / "quant")
    back = headwise.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="sdpa"), tmp_path / "quant")
    by_hand = prepare(headwise.wrap(AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="sdpa"), METHODS[method]()), method)
    trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for name, param in by_hand.named_parameters():
            if param.requires_grad:
                param.copy_(trained[name])
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids).logits, by_hand(input_ids=ids).logits, atol=0, rtol=0)
        bare = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="sdpa")(input_ids=ids).logits
        assert (back(input_ids=ids).logits - bare).abs().max() > 1e-3  # the adapter acts


def test_lofit_merge_onto_a_4bit_base_is_a_clear_error(base_dir):
    model = headwise.wrap(quantized(base_dir, 4), LofitConfig(heads="all"))
    with pytest.raises(TypeError, match="plain float weights"):
        model.merge_and_unload()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_activation_checkpointing_gives_the_same_gradients(method):
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    grads = []
    for checkpointing in (False, True):
        base = tiny_model("llama", **SIZE)
        base.train()
        if checkpointing:
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = prepare(headwise.wrap(base, METHODS[method]()), method)
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_trainer_bf16_on_cpu_keeps_fp32_adapters(tmp_path):
    model = headwise.wrap(tiny_model("llama", **SIZE), LofitConfig(heads="all"))
    data, collator = toy_task(32), PaddingCollator(0)
    with torch.no_grad():
        before = model(**collator(list(data))).loss.item()
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=4, per_device_train_batch_size=8, learning_rate=5e-2,
                             bf16=True, use_cpu=True, report_to=[], save_strategy="no", remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    with torch.no_grad():
        after = model(**collator(list(data))).loss.item()
    assert after < before
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_torch_compile_same_logits_and_no_graph_breaks_from_our_hooks(method):
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])  # left padding: the mask reaches the hooks
    torch._dynamo.reset()
    base = tiny_model("llama", **SIZE)
    base.set_attn_implementation("sdpa")
    model = prepare(headwise.wrap(base, METHODS[method]()), method).eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        explanation = torch._dynamo.explain(base)(input_ids=ids, attention_mask=mask)
        assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
        assert explanation.graph_count == 1
        compiled = torch.compile(base, backend="eager")  # traced by dynamo; inductor is not run here
        real = mask.bool()
        assert torch.allclose(compiled(input_ids=ids, attention_mask=mask).logits[real], expected[real], atol=1e-6)
