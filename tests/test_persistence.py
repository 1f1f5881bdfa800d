"""save_pretrained / from_pretrained / AutoPeftModel / named adapters / push_to_hub (offline)."""

import io
import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file

import headwise
from headwise import AdapterShapeError
from lofit import LofitConfig
from tiny_models import VOCAB, hook_count, module_tree, randomize_adapter, tiny_model

HEADS = [(0, 1), (2, 3)]
IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(5))


def trained(arch="llama", heads=HEADS, seed=1, **config):
    model = headwise.wrap(tiny_model(arch), LofitConfig(heads=heads, use_scale=True, **config))
    randomize_adapter(model, seed=seed)
    return model


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_save_writes_safetensors_config_and_card(tmp_path):
    trained().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LOFIT" and config["heads"] == [[0, 1], [2, 3]]
    assert (config["model_type"], config["num_layers"], config["num_heads"], config["head_dim"]) == ("llama", 3, 4, 8)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert sorted(t.shape for k, t in tensors.items() if "offset_unit" not in k) == [(1, 8)] * 4
    assert sorted(t.shape for k, t in tensors.items() if "offset_unit" in k) == [(1, 1)] * 2  # offsets' units
    assert all("lofit_" in key and "default" not in key for key in tensors)
    assert "import headwise" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma"])
def test_save_load_round_trip_is_exact(tmp_path, arch):
    model = trained(arch)
    model.save_pretrained(tmp_path)
    loaded = headwise.from_pretrained(tiny_model(arch), tmp_path)
    assert torch.equal(logits(loaded), logits(model))
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = headwise.from_pretrained(tiny_model(arch), tmp_path, is_trainable=True)
    assert {n for n, p in trainable.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize("other", [dict(num_hidden_layers=2), dict(num_attention_heads=8, num_key_value_heads=2)])
def test_loading_onto_another_shape_is_a_clear_error_and_leaves_the_model_untouched(tmp_path, other):
    trained().save_pretrained(tmp_path)
    base = tiny_model("llama", **other)
    tree, state = module_tree(base), {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(AdapterShapeError, match="was made for a model with"):
        headwise.from_pretrained(base, tmp_path)
    assert module_tree(base) == tree and hook_count(base) == 0 and not hasattr(base, "peft_config")
    assert all(torch.equal(base.state_dict()[k], v) for k, v in state.items())


def test_auto_peft_model_loads_base_and_adapter(tmp_path):
    base_dir = tmp_path / "base"
    tiny_model("llama").save_pretrained(base_dir)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager")
    model = headwise.wrap(base, LofitConfig(heads=HEADS))
    randomize_adapter(model)
    model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter", attn_implementation="eager")
    assert torch.allclose(logits(auto), logits(model), atol=1e-6)


def test_named_adapters_switch_save_and_load(tmp_path):
    model = trained(heads=HEADS, seed=1)
    model.add_adapter("other", LofitConfig(heads=[(1, 0)], use_scale=True))
    randomize_adapter(model, seed=2)  # both adapters get new values
    out_default = logits(model)
    model.set_adapter("other")
    out_other = logits(model)
    assert not torch.allclose(out_default, out_other)
    assert all(("other" in n) == p.requires_grad for n, p in model.named_parameters() if "lofit_" in n)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_model.safetensors").exists()

    loaded = headwise.from_pretrained(tiny_model("llama"), tmp_path)
    loaded.load_adapter(tmp_path / "other", adapter_name="other")
    assert torch.equal(logits(loaded), out_default)
    loaded.set_adapter("other")
    assert torch.equal(logits(loaded), out_other)
    loaded.delete_adapter("default")
    assert torch.equal(logits(loaded), out_other)


class FakeHub:
    """Stands in for the Hub's HTTP API: records uploads into a folder."""

    def __init__(self, remote: Path):
        self.remote = remote

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, self.remote / repo_id, dirs_exist_ok=True)

    def create_commit(self, repo_id, operations, **kwargs):
        for op in operations:
            target = self.remote / repo_id / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(op.path_or_fileobj, target)


def install_as_cached_snapshot(folder: Path, repo_id: str, cache: Path) -> None:
    """Lay out ``folder`` the way huggingface_hub caches a downloaded repo."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    hub = FakeHub(tmp_path / "remote")
    for name in ("create_repo", "upload_folder", "create_commit"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, lambda self, *a, _n=name, **k: getattr(hub, _n)(*a, **k))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    return hub


def test_push_to_hub_and_load_by_repo_id_offline(offline_hub, tmp_path):
    model = trained()
    headwise.push_to_hub(model, "me/tiny-lofit")
    pushed = offline_hub.remote / "me/tiny-lofit"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in pushed.iterdir()}
    assert "import headwise" in (pushed / "README.md").read_text()

    install_as_cached_snapshot(pushed, "me/tiny-lofit", tmp_path / "cache")
    loaded = headwise.from_pretrained(tiny_model("llama"), "me/tiny-lofit")
    assert torch.equal(logits(loaded), logits(model))


def test_peft_model_push_to_hub_uploads_the_adapter(offline_hub, monkeypatch):
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import ModelCard

    monkeypatch.setattr(transformers_hub, "create_and_tag_model_card", lambda *a, **k: ModelCard("generic card"))
    model = trained()
    model.push_to_hub("me/via-peft")
    pushed = offline_hub.remote / "me/via-peft"
    loaded = PeftModel.from_pretrained(tiny_model("llama"), pushed)
    assert torch.equal(logits(loaded), logits(model))



# -- PEFT's own entry points: quiet, and no Hub lookup on save (headwise._peft_defaults) ----------------------------
@pytest.fixture
def no_hub_lookups(monkeypatch):
    """Any Hub lookup of PEFT's save (does the base model's vocabulary differ?) fails the test."""
    import peft.utils.save_and_load as save_and_load

    def lookup(repo_id, filename, **kwargs):
        raise AssertionError(f"save_pretrained asked the Hub for {repo_id}/{filename}")

    monkeypatch.setattr(save_and_load, "check_file_exists_on_hf_hub", lookup)


def on_a_hub_model(arch="llama"):
    """A tiny model named by a Hub id, as the bundled model is: PEFT's save would look that id up."""
    base = tiny_model(arch)
    base.config._name_or_path = "someone/a-hub-model"
    return base


def test_plain_peft_wrap_save_and_reload_record_no_warning_and_ask_the_hub_nothing(tmp_path, no_hub_lookups):
    """``transformers``' is_gradient_checkpointing FutureWarning (read by PEFT's PeftModel.__init__) and the Hub
    lookup of ``save_embedding_layers="auto"`` (two warnings offline) are gone for plain PEFT calls too."""
    import peft

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.get_peft_model(on_a_hub_model(), LofitConfig(heads=HEADS))
        randomize_adapter(model)
        model.save_pretrained(tmp_path)
        expected = logits(model)
        loaded = PeftModel.from_pretrained(model.unload(), tmp_path)
        loaded.save_pretrained(tmp_path / "again")
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == "someone/a-hub-model"
    assert torch.equal(logits(loaded), expected)


def test_only_peft_own_call_is_silenced(recwarn):
    """The user's own read of the deprecated property still warns; another PEFT method keeps PEFT's save defaults."""
    import peft

    model = peft.get_peft_model(tiny_model("llama"), LofitConfig(heads=HEADS))
    warnings.simplefilter("always")
    model.get_base_model().is_gradient_checkpointing
    assert any("is_gradient_checkpointing" in str(w.message) for w in recwarn.list)
    lora = peft.get_peft_model(tiny_model("llama"), peft.LoraConfig(target_modules=["q_proj"]))
    assert "save_pretrained" not in vars(lora) and "save_pretrained" in vars(model)


def test_an_explicit_save_embedding_layers_still_wins(tmp_path, no_hub_lookups):
    import peft

    model = peft.get_peft_model(on_a_hub_model(), LofitConfig(heads=HEADS))
    model.save_pretrained(tmp_path, save_embedding_layers=True)
    assert any("embed_tokens" in key for key in load_file(tmp_path / "adapter_model.safetensors"))


def test_a_plain_peft_model_pickles_with_its_save_defaults(tmp_path, no_hub_lookups):
    import peft

    model = peft.get_peft_model(on_a_hub_model(), LofitConfig(heads=HEADS))
    randomize_adapter(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copy = torch.load(buffer, weights_only=False)
    assert torch.equal(logits(copy), logits(model))
    copy.save_pretrained(tmp_path)  # still no Hub lookup
    assert (tmp_path / "adapter_model.safetensors").is_file()
