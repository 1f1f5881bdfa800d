"""Fails loudly when PEFT changes the internals that headwise's registration leans on; the registry's own rules."""

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import peft
import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from peft import PeftConfig, mapping
from torch import nn

import headwise
from headwise import AdapterConfig, compat
from headwise.adapter import HeadLayer
from headwise.registry import UnknownMethodError, method_classes
from headwise.tuner import HeadTuner
from lofit import LofitConfig, LofitModel

REPO = Path(__file__).resolve().parents[1]


def test_peft_still_has_the_method_tables_headwise_writes():
    """headwise registers its methods by writing into these three tables of ``peft.mapping``: if PEFT renames,
    moves or stops reading them, this fails (and so does ``import headwise``, with the tested range)."""
    for name in compat.PEFT_METHOD_TABLES:
        assert isinstance(getattr(mapping, name, None), dict), f"peft {peft.__version__} has no peft.mapping.{name}"
    tables = compat.peft_method_tables()
    assert tables.config is mapping.PEFT_TYPE_TO_CONFIG_MAPPING
    assert tables.tuner is mapping.PEFT_TYPE_TO_TUNER_MAPPING
    assert tables.prefix is mapping.PEFT_TYPE_TO_PREFIX_MAPPING
    assert tables.config[LofitModel.prefix.rstrip("_").upper()] is LofitConfig
    assert tables.tuner["LOFIT"] is LofitModel
    assert tables.prefix["LOFIT"] == "lofit_" == LofitModel.prefix
    # PEFT's own registration still refuses names outside its enum (if it stops refusing, headwise could use it)
    with pytest.raises(ValueError, match="Unknown PEFT type"):
        peft.utils.peft_types.register_peft_method(name="headwise_probe", config_cls=LofitConfig, model_cls=LofitModel)


def test_peft_type_is_a_str_that_plain_strings_find():
    assert LofitConfig.method.value.lower() == "lofit"  # what transformers calls
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["LOFIT"] is LofitConfig  # what a loaded JSON holds


def test_config_json_round_trip(tmp_path):
    config = LofitConfig(heads=[(0, 1), (2, 3)], use_scale=True, l1_lambda=1e-3)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LOFIT"
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LofitConfig)
    assert loaded.heads == [(0, 1), (2, 3)] and loaded.use_scale and loaded.l1_lambda == 1e-3
    card = (tmp_path / "README.md").read_text()
    assert "import headwise" in card and "`import lofit`" in card


def test_peft_version_is_in_the_tested_range_which_pyproject_pins():
    assert Version(peft.__version__) in SpecifierSet(compat.TESTED["peft"]), (
        f"headwise's PEFT registration is tested on peft{compat.TESTED['peft']}, not {peft.__version__}"
    )
    pins = {}
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].strip()
        pins[name] = requirement[len(name):]
    for package in ("peft", "transformers", "torch"):
        assert SpecifierSet(pins[package]) == SpecifierSet(compat.TESTED[package]), package


def test_a_missing_internal_names_the_tested_range():
    error = compat.missing("peft", "peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING")
    assert isinstance(error, ImportError)
    assert "peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING" in str(error) and compat.TESTED["peft"] in str(error)
    assert peft.__version__ in str(error)
    with pytest.raises(compat.CompatibilityError, match=r"torch\.nn\.Module\(\)\._no_such_dict.*torch>=2\.4"):
        compat._require(nn.Module(), ("_no_such_dict",), "torch", "torch.nn.Module()")
    compat.check_internals()  # the installed versions have everything


# -- registration rules --------------------------------------------------------------------------------

def test_registering_twice_with_other_classes_is_refused():
    class OtherConfig(LofitConfig):
        pass

    with pytest.raises(KeyError, match="already registered with LofitConfig"):
        headwise.register_method("LOFIT", OtherConfig, LofitModel)
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["LOFIT"] is LofitConfig


class ScaleLayer(HeadLayer):
    adapter_layer_names = ("regscale_scale",)

    def __init__(self, site):
        super().__init__(site)
        self.regscale_scale = nn.ParameterDict()

    def create_parameters(self, adapter_name, num_selected, config):
        self.regscale_scale[adapter_name] = nn.Parameter(torch.ones(num_selected, 1))

    def edit_heads(self, heads, adapter_name, call=None):
        return heads * self.full_head_tensor(self.regscale_scale[adapter_name], adapter_name, fill=1.0)


class ScaleModel(HeadTuner):
    prefix = "regscale_"
    tuner_layer_cls = ScaleLayer


@dataclass
class ScaleConfig(AdapterConfig):
    pass


def test_a_config_class_registered_under_one_name_is_refused_under_another():
    method = headwise.register_method("reg_scale", ScaleConfig, ScaleModel)
    other_tuner = type("OtherScaleModel", (HeadTuner,), {"prefix": "regother_", "tuner_layer_cls": type(
        "OtherLayer", (ScaleLayer,), {"adapter_layer_names": ("regother_scale",)})})
    before = dict(mapping.PEFT_TYPE_TO_CONFIG_MAPPING)
    with pytest.raises(ValueError, match="ScaleConfig is already registered as REG_SCALE"):
        headwise.register_method("reg_other", ScaleConfig, other_tuner)
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING == before and ScaleConfig.method == method == "REG_SCALE"
    assert "REG_OTHER" not in headwise.registered_methods()


def test_a_holder_must_override_edit_heads_or_edit_mask():
    idle = type("IdleLayer", (ScaleLayer,), {"edit_heads": HeadLayer.edit_heads, "adapter_layer_names": ("regidle_x",)})
    tuner = type("IdleModel", (HeadTuner,), {"prefix": "regidle_", "tuner_layer_cls": idle})
    config = dataclass(type("IdleConfig", (AdapterConfig,), {}))
    with pytest.raises(TypeError, match="edit_heads"):
        headwise.register_method("reg_idle", config, tuner)
    assert "REG_IDLE" not in headwise.registered_methods()
    def edit_mask(self, mask, adapter_name, call):
        return mask

    masker = type("MaskLayer", (idle,), {"edit_mask": edit_mask, "adapter_layer_names": ("regmask_x",)})
    tuner = type("MaskModel", (HeadTuner,), {"prefix": "regmask_", "tuner_layer_cls": masker})
    assert headwise.register_method("reg_mask", config, tuner) == "REG_MASK"


# -- finding a method by its saved name ---------------------------------------------------------------

def test_an_unknown_method_name_says_what_to_import():
    with pytest.raises(UnknownMethodError, match=r"no headwise method 'NO_SUCH_METHOD'.*`import no_such_method`"):
        method_classes("NO_SUCH_METHOD")
    assert method_classes("LOFIT") == (LofitConfig, LofitModel)


FRESH_LOAD = r"""
import sys
from pathlib import Path
import headwise
from headwise.loading import read_adapter_config
assert not {"lofit", "soft_injection", "zerotuning", "interventions"} & set(sys.modules), "import headwise imported a method"
assert headwise.registered_methods() == {}
config = read_adapter_config(Path(sys.argv[1]))      # finds LOFIT through its entry point
assert type(config).__name__ == "LofitConfig" and "lofit" in sys.modules
methods = headwise.load_methods()                    # every installed method, for PeftModel.from_pretrained
assert {"LOFIT", "SOFT_INJECTION", "ZEROTUNING", "HEAD_GATE"} <= set(methods), methods
print("ok")
"""


def test_headwise_loaders_import_a_saved_methods_package_through_its_entry_point(tmp_path):
    LofitConfig(heads=[(0, 1)]).save_pretrained(tmp_path)
    result = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
