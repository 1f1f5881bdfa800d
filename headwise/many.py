"""Many adapters on one model: load a folder of saved adapters under their names, and what each one costs.

Head adapters are small (kilobytes), so one base model can hold hundreds and serve them in mixed batches
(``adapter_names=``, :mod:`headwise.mixed`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from torch import nn

from .loading import CONFIG_NAME, AdapterFileError, check_adapter_folder
from .model import check_adapter_name, from_pretrained
from .progress import progress
from .transaction import unchanged_on_error

__all__ = ["adapter_memory", "adapter_folders", "load_adapters"]

logger = logging.getLogger(__name__)


def adapter_folders(folder: str | Path) -> dict[str, Path]:
    """``{name: subfolder}`` for every subfolder of ``folder`` that holds an ``adapter_config.json``, sorted by name."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AdapterFileError(f"{root} is not a folder: give a folder whose subfolders are saved adapters")
    found = {child.name: child for child in sorted(root.iterdir()) if (child / CONFIG_NAME).is_file()}
    if not found:
        raise AdapterFileError(f"{root} holds no saved adapter (no subfolder with {CONFIG_NAME})")
    return found


def load_adapters(
    model: nn.Module, adapters: str | Path | dict[str, str | Path], allow_nonfinite: bool = False,
):
    """Load many saved adapters onto ``model`` (a base model, or a ``PeftModel`` that already has some) in one
    call, each under its name: the subfolder names of a folder, or the keys of ``{name: folder}``. Every
    folder is checked (config, method, keys, finite values, shapes) and every name refused if taken before
    the first is attached; a failure part-way leaves ``model`` as it was. Returns the ``PeftModel``; the
    active adapter stays what it was (the first loaded, on a base model)."""
    folders = adapter_folders(adapters) if isinstance(adapters, (str, Path)) else {n: Path(f) for n, f in adapters.items()}
    if not folders:
        raise ValueError("no adapters to load: give a folder of saved adapters or a non-empty {name: folder}")
    taken = set(getattr(model, "peft_config", {}))
    for name in folders:
        check_adapter_name(name)
        if name in taken:
            raise ValueError(f"the model already has an adapter named {name!r}: delete_adapter({name!r}) first or rename the folder")
    configs = {name: check_adapter_folder(model, folder, allow_nonfinite) for name, folder in
               progress(folders.items(), "checking adapters", total=len(folders))}
    methods = {config.peft_type for config in configs.values()} | {c.peft_type for c in getattr(model, "peft_config", {}).values()}
    if len(methods) > 1:
        raise ValueError(f"one model holds adapters of one method, got {sorted(str(m) for m in methods)}: load each "
                         "method onto its own copy of the base model")
    names = list(folders)
    with unchanged_on_error(model, covers_nested=True):  # one snapshot for all of them, not one per adapter
        start = 0
        if not hasattr(model, "peft_config"):
            model = from_pretrained(model, str(folders[names[0]]), adapter_name=names[0], allow_nonfinite=allow_nonfinite)
            start = 1
        for name in progress(names[start:], "loading adapters"):
            model.load_adapter(str(folders[name]), adapter_name=name)
    memory = adapter_memory(model, names)
    logger.info("loaded %d adapters, %.1f KB each on average", len(names), sum(memory.values()) / len(names) / 1024)
    return model


def adapter_memory(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, int]:
    """Bytes of tensors each adapter holds on the model (parameters and buffers such as a task embedding)."""
    holders = model.base_model.holders() if hasattr(model, "base_model") and hasattr(model.base_model, "holders") else []
    wanted = list(getattr(model, "peft_config", {}) if names is None else names)
    sizes = dict.fromkeys(wanted, 0)
    for holder in holders:
        for name in wanted:
            sizes[name] += sum(tensor.numel() * tensor.element_size() for _, tensor in holder.adapter_tensors(name))
    return sizes
