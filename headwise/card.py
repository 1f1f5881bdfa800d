"""The model card (README.md) a saved headwise adapter carries: base model, method, heads, parameter
count, library version, and how to load it. The Hub shows it; PEFT's empty template is replaced, a card
the user wrote keeps its text and gets a headwise section."""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

__all__ = ["stored_parameter_count", "write_model_card"]

START, END = "<!-- headwise card: start -->", "<!-- headwise card: end -->"
PEFT_TEMPLATE_MARK = "[More Information Needed]"


def stored_parameter_count(directory: Path, config) -> int | None:
    """Trainable values in the saved weights (buffers such as a task embedding are not counted)."""
    from safetensors import safe_open

    from .registry import method_classes

    path = directory / "adapter_model.safetensors"
    if not path.is_file():
        return None
    trained = method_classes(config.method)[1].tuner_layer_cls.adapter_layer_names
    total = 0
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            if any(re.search(rf"\.{name}(\.|$)", key) for name in trained):
                shape = handle.get_slice(key).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def _heads_line(config) -> str:
    shape = f"{config.num_layers} layers x {config.num_heads} heads" if config.num_layers else "the model's heads"
    if config.heads == "all":
        layers = "" if config.layers is None else f" of layers {', '.join(map(str, config.layers))}"
        return f"all heads{layers} ({shape})"
    heads = [tuple(h) for h in config.heads]
    listed = ", ".join(f"L{layer}.H{head}" for layer, head in heads[:24]) + (" ..." if len(heads) > 24 else "")
    return f"{len(heads)} of {shape}: {listed}"


def _section(config, parameters: int | None) -> str:
    import peft

    method = config.method.value
    package = type(config).__module__.split(".")[0]  # importing it registers the method
    if package == "__main__":  # defined in a script: name the class instead
        package = f"the module that defines {type(config).__name__}"
    summary = inspect.cleandoc(type(config).__doc__ or "").split("\n\n")[0].replace("\n", " ").replace("``", "`")
    base = config.base_model_name_or_path or "<the base model>"
    count = f"{parameters:,}" if parameters is not None else "see adapter_model.safetensors"
    return "\n".join([
        START,
        f"# {method} adapter for {base}",
        "",
        f"A head-level adapter made with headwise (the `headwise` Python package: `pip install headwise`). {summary}",
        "",
        f"- **Base model:** `{base}`",
        f"- **Method:** {method}",
        f"- **Heads:** {_heads_line(config)}",
        f"- **Trainable parameters:** {count}",
        f"- **Library:** headwise {config.headwise_version}, PEFT {peft.__version__}",
        "",
        "## How to load it",
        "",
        f"headwise's loaders import the method's package (`{package}`) themselves; PEFT's own loaders "
        f"(`PeftModel.from_pretrained`, `AutoPeftModelForCausalLM`) know the {method} type once `import {package}` "
        "(or `headwise.load_methods()`) has run:" if " " not in package else
        f"The {method} method is defined in {package}: import it before loading.",
        "",
        "```python",
        "import headwise",
        "",
        "model, tokenizer = headwise.load_adapter_model(\"<this repo or folder>\")  # loads the base it names",
        "# or, with a base you loaded yourself:",
        "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base)})",
        "model = headwise.from_pretrained(base, \"<this repo or folder>\")",
        "```",
        "",
        "From the shell: `headwise inspect <this repo or folder>`, `headwise eval <this repo or folder> --data FILE`.",
        END,
    ])


def write_model_card(directory: str | os.PathLike, config) -> Path:
    """Write or update ``directory/README.md`` for the adapter ``config`` saved there."""
    from huggingface_hub import ModelCard, ModelCardData

    directory = Path(directory)
    path = directory / "README.md"
    card = ModelCard(path.read_text(encoding="utf-8")) if path.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
    data = card.data
    data.library_name = data.library_name or "peft"
    if config.base_model_name_or_path and not os.path.isabs(str(config.base_model_name_or_path)):
        data.base_model = config.base_model_name_or_path
    tags = [t for t in (data.tags or []) if not os.path.isabs(t.split(":")[-1])]  # no machine-local paths
    data.tags = sorted(set(tags) | {"headwise", config.method.value.lower().replace("_", "-")})
    section = _section(config, stored_parameter_count(directory, config))
    text = card.text
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
    elif PEFT_TEMPLATE_MARK in text or not text.strip():
        text = "\n" + section + "\n"
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
    path.write_text(str(card), encoding="utf-8")
    return path
