"""The method API is open: a method defined here, outside ``headwise/``, registers through the same
public call as the built-ins, then wraps, trains, saves, reloads (headwise and PEFT) and unloads."""

from dataclasses import dataclass, field

import peft
import pytest
import torch
from torch import nn

import headwise
import lofit  # noqa: F401  (registers LOFIT: the "clash" case below collides with its prefix)
from headwise import AdapterConfig, register_method
from headwise.adapter import HeadLayer
from headwise.tuner import HeadTuner
from tiny_models import tiny_model, train_on_ids


class GainLayer(HeadLayer):
    """z_h <- g_h * z_h: one scalar per chosen head."""

    adapter_layer_names = ("toygain_gain",)

    def __init__(self, site):
        super().__init__(site)
        self.toygain_gain = nn.ParameterDict()

    def create_parameters(self, adapter_name, num_selected, config):
        self.toygain_gain[adapter_name] = nn.Parameter(torch.full((num_selected, 1), config.gain))

    def edit_heads(self, heads, adapter_name, call):
        return heads * self.full_head_tensor(self.toygain_gain[adapter_name], adapter_name, fill=1.0)


class GainModel(HeadTuner):
    prefix = "toygain_"
    tuner_layer_cls = GainLayer


@dataclass
class GainConfig(AdapterConfig):
    gain: float = field(default=1.0, metadata={"help": "initial gain of every chosen head"})


TOY = register_method("toy_gain", GainConfig, GainModel)


def reference_logits(model, heads, gain, ids):
    """From scratch: multiply the chosen heads' slices of each o_proj input by ``gain``."""
    handles = []
    for layer_index, layer in enumerate(model.model.layers):
        chosen = [h for l, h in heads if l == layer_index]

        def hook(module, args, chosen=chosen):
            x = args[0].clone()
            d = x.shape[-1] // model.config.num_attention_heads
            for h in chosen:
                x[..., h * d:(h + 1) * d] *= gain
            return (x,)

        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for handle in handles:
            handle.remove()


def test_the_toy_method_is_known_to_peft_and_to_headwise():
    assert TOY == "TOY_GAIN" and TOY.value.lower() == "toy_gain"
    assert peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING["TOY_GAIN"] is GainConfig
    assert peft.mapping.PEFT_TYPE_TO_PREFIX_MAPPING["TOY_GAIN"] == "toygain_"
    assert headwise.registry.registered_methods()[TOY] == (GainConfig, GainModel)
    assert register_method("toy_gain", GainConfig, GainModel) == TOY  # registering again is a no-op


def test_the_toy_method_wraps_saves_reloads_and_unloads(tmp_path):
    heads = [(0, 1), (2, 3)]
    base = tiny_model("llama")
    ids = torch.tensor([[3, 9, 17, 40, 5]])
    with torch.no_grad():
        bare = base(ids).logits
    expected = reference_logits(base, heads, 0.25, ids)
    model = headwise.wrap(base, GainConfig(heads=heads, gain=0.25))
    assert headwise.trainable_parameters(model)["trainable"] == 2
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected)
    model.save_pretrained(tmp_path)
    assert "TOY_GAIN adapter" in (tmp_path / "README.md").read_text()

    for load in (lambda b: headwise.from_pretrained(b, str(tmp_path)), lambda b: peft.PeftModel.from_pretrained(b, str(tmp_path))):
        reloaded = load(tiny_model("llama"))
        with torch.no_grad():
            torch.testing.assert_close(reloaded(ids).logits, expected)
    restored = model.unload()
    with torch.no_grad():
        torch.testing.assert_close(restored(ids).logits, bare)


def test_the_toy_method_trains():
    model = headwise.wrap(tiny_model("llama"), GainConfig(heads=[(1, 0), (1, 2)]))
    ids = torch.tensor([[3, 9, 17, 40, 5, 8, 11]])
    losses = train_on_ids(model, ids, steps=20)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name, tuner_attributes, message", [
    ("lora", {"prefix": "x_"}, "one of PEFT's own method names"),
    ("9lives", {"prefix": "x_"}, "letters, digits"),
    ("no_prefix", {}, "must declare its own parameter prefix"),
    ("bad_prefix", {"prefix": "Bad"}, "must declare its own parameter prefix"),
    ("wrong_prefix", {"prefix": "other_"}, "must start with 'other_'"),
    ("clash", {"prefix": "lofit_"}, "collides with LOFIT"),
])
def test_registration_checks_everything_before_changing_a_table(name, tuner_attributes, message):
    tuner = type("BadTuner", (HeadTuner,), {"tuner_layer_cls": GainLayer, **tuner_attributes})
    before = dict(peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING)
    with pytest.raises(ValueError, match=message):
        register_method(name, GainConfig, tuner)
    assert peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING == before


def test_registration_refuses_classes_of_the_wrong_kind():
    with pytest.raises(TypeError, match="AdapterConfig"):
        register_method("toy_other", peft.LoraConfig, GainModel)
    with pytest.raises(TypeError, match="HeadTuner"):
        register_method("toy_other", GainConfig, nn.Module)


def test_a_config_of_an_unregistered_method_says_to_register_it():
    @dataclass
    class Unregistered(AdapterConfig):
        pass

    with pytest.raises(TypeError, match="register_method"):
        Unregistered()


def test_per_head_read_and_write_helpers_work_for_any_method():
    model = headwise.wrap(tiny_model("llama"), GainConfig(heads=[(0, 1), (2, 3), (2, 0)], gain=0.5))
    tuner = model.base_model
    gains = tuner.read_heads("default", lambda holder: holder.toygain_gain["default"], fill=float("nan"))
    assert gains.shape == (3, 4, 1)
    assert torch.equal(gains.isnan().squeeze(-1), torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool))
    assert gains[0, 1].item() == gains[2, 3].item() == 0.5
    wanted = torch.arange(12, dtype=torch.float32).view(3, 4, 1)
    tuner.write_heads("default", wanted, lambda holder, rows: holder.toygain_gain["default"].data.copy_(rows))
    assert torch.equal(tuner.read_heads("default", lambda holder: holder.toygain_gain["default"])[[0, 2, 2], [1, 3, 0]], wanted[[0, 2, 2], [1, 3, 0]])
    with pytest.raises(ValueError, match=r"\(layers, heads, ...\)=\(3, 4, ...\)"):
        tuner.write_heads("default", torch.zeros(4, 3, 1), lambda holder, rows: None)
    with pytest.raises(ValueError, match="no toygain adapter named 'other'"):
        tuner.read_heads("other", lambda holder: holder.toygain_gain["other"])


class RecorderLayer(HeadLayer):
    """Implements only edit_mask (returning None: the mask is kept) and records each call it is handed."""

    adapter_layer_names = ("toyrec_unused",)

    def __init__(self, site):
        super().__init__(site)
        self.toyrec_unused = nn.ParameterDict()
        self.seen = []

    def create_parameters(self, adapter_name, num_selected, config):
        self.toyrec_unused[adapter_name] = nn.Parameter(torch.zeros(num_selected))

    def edit_mask(self, mask, adapter_name, call):
        self.seen.append((call.past_length, call.q_len, call.is_prefill))
        return None


class RecorderModel(HeadTuner):
    prefix = "toyrec_"
    tuner_layer_cls = RecorderLayer


@dataclass
class RecorderConfig(AdapterConfig):
    pass


register_method("toy_recorder", RecorderConfig, RecorderModel)


def test_a_mask_edit_gets_one_reading_of_each_attention_call():
    base = tiny_model("llama")
    model = headwise.wrap(base, RecorderConfig(heads=[(1, 0)]))
    holder = next(m for m in model.modules() if isinstance(m, RecorderLayer))
    ids = torch.tensor([[3, 9, 17, 40, 5]])
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert holder.seen == [(0, 5, True), (5, 1, False), (6, 1, False)]
    assert holder.site_roles() == {"mask"}  # the head outputs are not unflattened for it
    model.unload()
    attention = base.model.layers[1].self_attn
    assert not attention._forward_pre_hooks and not attention._forward_hooks and not attention.o_proj._forward_pre_hooks


def test_a_holder_that_edits_nothing_is_refused_at_registration():
    layer = type("Idle", (HeadLayer,), {"adapter_layer_names": ("toyidle_x",), "create_parameters": GainLayer.create_parameters})
    tuner = type("IdleTuner", (HeadTuner,), {"prefix": "toyidle_", "tuner_layer_cls": layer})
    with pytest.raises(TypeError, match="must implement edit_heads"):
        register_method("toy_idle", GainConfig, tuner)
