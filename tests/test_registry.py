"""Fails loudly when PEFT changes the internals that headwise's registration leans on."""

import json

import peft
from peft import PeftConfig, mapping

import headwise
from headwise.registry import HeadPeftType
from lofit import LofitConfig, LofitModel


def test_lofit_is_in_all_peft_tables():
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING[HeadPeftType.LOFIT] is LofitConfig
    assert mapping.PEFT_TYPE_TO_TUNER_MAPPING[HeadPeftType.LOFIT] is LofitModel
    assert mapping.PEFT_TYPE_TO_PREFIX_MAPPING[HeadPeftType.LOFIT] == "lofit_"
    assert LofitModel.prefix == "lofit_"


def test_peft_type_is_a_str_that_plain_strings_find():
    assert HeadPeftType.LOFIT.value.lower() == "lofit"  # what transformers calls
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["LOFIT"] is LofitConfig  # what a loaded JSON holds


def test_config_json_round_trip(tmp_path):
    config = LofitConfig(heads=[(0, 1), (2, 3)], use_scale=True, l1_lambda=1e-3)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LOFIT"
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LofitConfig)
    assert loaded.heads == [(0, 1), (2, 3)] and loaded.use_scale and loaded.l1_lambda == 1e-3
    assert "import headwise" in (tmp_path / "README.md").read_text()


def test_registering_twice_with_other_classes_is_refused():
    import pytest

    class OtherConfig(LofitConfig):
        pass

    with pytest.raises(KeyError, match="already registered with LofitConfig"):
        headwise.register_method(HeadPeftType.LOFIT, OtherConfig, LofitModel)
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["LOFIT"] is LofitConfig


def test_peft_version_is_in_the_tested_range():
    major, minor = (int(x) for x in peft.__version__.split(".")[:2])
    assert (major, minor) == (0, 21), "headwise's PEFT registration is tested on peft 0.21.x only"

