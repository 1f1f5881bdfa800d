"""The model card save_pretrained writes: base, method, heads, trainable parameters, versions, how to load."""

import headwise
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig
from tiny_models import tiny_model
from zerotuning import ZeroTuningConfig


def card_of(folder):
    return (folder / "README.md").read_text()


def test_the_card_replaces_peft_template_and_says_what_the_adapter_is(tmp_path):
    model = tiny_model("llama")
    model.name_or_path = "someone/tiny-llama"
    headwise.wrap(model, LofitConfig(heads=[(0, 1), (2, 3)], use_scale=True)).save_pretrained(tmp_path)
    card = card_of(tmp_path)
    assert "More Information Needed" not in card
    assert "base_model: someone/tiny-llama" in card and "- headwise" in card and "- lofit" in card
    assert "**Heads:** 2 of 3 layers x 4 heads: L0.H1, L2.H3" in card
    assert "**Trainable parameters:** 32" in card  # 2 heads x head_dim 8 x (offset + scale)
    assert f"headwise {headwise.__version__}" in card
    assert 'headwise.load_adapter_model("<this repo or folder>")' in card
    assert "`pip install headwise`" in card and "http" not in card  # no link to a page nobody checked exists


def test_buffers_are_not_counted_as_trainable_parameters(tmp_path):
    model = tiny_model("llama")
    headwise.wrap(model, SoftInjectionConfig()).save_pretrained(tmp_path)  # theta 3 x 4; the task embedding is a buffer
    assert "**Trainable parameters:** 12" in card_of(tmp_path)
    assert "**Heads:** all heads (3 layers x 4 heads)" in card_of(tmp_path)


def test_a_card_the_user_wrote_keeps_its_text_and_the_section_is_updated_on_resave(tmp_path):
    model = headwise.wrap(tiny_model("llama"), ZeroTuningConfig(heads=[(1, 1)]))
    model.save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text(card_of(tmp_path).replace("<!-- headwise card: start -->", "My notes on this adapter.\n\n<!-- headwise card: start -->"))
    model.save_pretrained(tmp_path)
    card = card_of(tmp_path)
    assert card.count("My notes on this adapter.") == 1 and card.count("<!-- headwise card: start -->") == 1
    assert "**Trainable parameters:** 1" in card
