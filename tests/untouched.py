"""``assert_untouched``: a failed call must leave a model exactly as it was."""

from __future__ import annotations

import copy

import torch

from tiny_models import module_tree

HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs")


def model_state(model) -> dict:
    """Everything an adapter call may change: tensors, trainability, hooks, module tree, peft_config, config."""
    config = getattr(model, "config", None)
    peft_config = getattr(model, "peft_config", None)
    return {
        "tensors": {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "hooks": [(name, [len(getattr(m, d)) for d in HOOK_DICTS]) for name, m in model.named_modules()],
        "tree": module_tree(model),
        "peft_config": None if peft_config is None else {k: v.to_dict() for k, v in peft_config.items()},
        "config": None if config is None else copy.deepcopy(config.to_dict()),
    }


def assert_untouched(model, before: dict) -> None:
    after = model_state(model)
    assert after["tree"] == before["tree"], "module tree changed"
    assert after["hooks"] == before["hooks"], "hooks changed"
    assert after["requires_grad"] == before["requires_grad"], "trainable flags changed"
    assert after["peft_config"] == before["peft_config"], "peft_config changed"
    assert after["config"] == before["config"], "config changed"
    assert after["tensors"].keys() == before["tensors"].keys(), "parameters or buffers added or removed"
    for name, tensor in before["tensors"].items():
        assert torch.equal(after["tensors"][name], tensor), f"{name} changed"
