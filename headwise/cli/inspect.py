"""``headwise inspect``: what a saved adapter holds (and a layers x heads PNG), or a model's head sites."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from .errors import UserError

logger = logging.getLogger("headwise.cli")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "inspect", help="a saved adapter (config, parameters, heads, PNG) or a model's head sites",
        description="With an adapter folder: its method, base model, heads, trainable parameters and a layers x heads "
                    "PNG of the size of each head's trained values. With a model (folder, Hub id or "
                    "smollm2-135m-instruct): where its heads are.",
    )
    parser.add_argument("target", nargs="?", default="smollm2-135m-instruct", metavar="DIR_OR_MODEL")
    parser.add_argument("--png", metavar="PATH", help="where to write the heads PNG (default: ./<folder name>_heads.png)")
    parser.set_defaults(run=run)
    # `headwise adapter DIR`: the earlier name of `inspect DIR`
    alias = commands.add_parser("adapter", help="same as inspect DIR")
    alias.add_argument("target", metavar="DIR")
    alias.add_argument("--png", metavar="PATH")
    alias.set_defaults(run=run)


def _read_adapter(folder: Path):
    """``(config, per-head matrix)``: the checked config and the L2 norm of each head's trained values."""
    from safetensors import safe_open

    from ..loading import CONFIG_NAME, WEIGHTS_NAME, AdapterFileError, read_adapter_config
    from ..registry import method_classes

    path = folder / CONFIG_NAME
    config = read_adapter_config(folder)
    tuner_cls = method_classes(config.method)[1]
    if not config.num_layers:
        raise AdapterFileError(f"{path} records no model shape (num_layers / num_heads): save the adapter again")
    heads = config.resolve_heads(config.num_layers, config.num_heads)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    trained = tuner_cls.tuner_layer_cls.adapter_layer_names
    matrix = torch.full((config.num_layers, config.num_heads), float("nan"))
    squares = torch.zeros_like(matrix)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise UserError(f"{weights} is missing: the folder must hold what save_pretrained() wrote")
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            name = key.rsplit(".", 1)[-1]
            layer = next((int(part) for part in key.split(".") if part.isdigit()), None)
            if name not in trained or layer not in by_layer:
                continue
            values = handle.get_tensor(key).float()
            rows = values.reshape(len(by_layer[layer]), -1) if values.numel() else values
            for row, head in zip(rows, by_layer[layer]):
                squares[layer, head] += row.pow(2).sum()
    for layer, head in heads:
        matrix[layer, head] = squares[layer, head].sqrt()
    return config, matrix, heads


def write_heads_png(folder: Path, png: Path, scores: torch.Tensor | None = None) -> Path | None:
    """A layers x heads heatmap of the adapter in ``folder`` (or of ``scores``), its heads boxed; None
    without matplotlib (the ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        logger.info("no heads PNG: install headwise[plot] (matplotlib) for it")
        return None
    from ..experiments.plots import plot_head_scores

    config, matrix, heads = _read_adapter(Path(folder))
    label = "||trained values||" if scores is None else "selection score"
    return plot_head_scores(matrix if scores is None else scores, png, selected=heads,
                            title=f"{config.method.value}: {len(heads)} heads", label=label)


def _inspect_adapter(folder: Path, png: str | None) -> None:
    import peft  # noqa: F401

    from ..card import stored_parameter_count

    config, matrix, heads = _read_adapter(folder)
    count = stored_parameter_count(folder, config)
    listed = ", ".join(f"L{layer}.H{head}" for layer, head in heads[:12]) + (" ..." if len(heads) > 12 else "")
    print(f"{config.method.value} adapter for {config.base_model_name_or_path} ({config.model_type}: "
          f"{config.num_layers} layers x {config.num_heads} heads, head_dim {config.head_dim})")
    print(f"heads: {len(heads)} of {config.num_layers * config.num_heads}: {listed}")
    print(f"trainable parameters: {count:,}; headwise {config.headwise_version}")
    largest = sorted(((matrix[l, h].item(), l, h) for l, h in heads), reverse=True)[:5]
    print("largest trained values: " + ", ".join(f"L{l}.H{h} {v:.3g}" for v, l, h in largest))
    path = write_heads_png(folder, Path(png) if png else Path.cwd() / f"{folder.resolve().name}_heads.png")
    if path:
        print(f"heads PNG: {path}")


def _inspect_model(name: str) -> None:
    import headwise

    from ..compat import attn_implementation
    from .options import load_model

    if not Path(name).exists() and name.startswith((".", "/", "~")):
        raise UserError(f"no model or adapter at {name}: give a folder, a Hub id or smollm2-135m-instruct")
    model, _ = load_model(name)
    sites = headwise.find_head_sites(model)
    first = sites[0]
    print(f"{model.config.model_type}: {len(sites)} layers x {first.num_heads} query heads "
          f"({first.num_kv_heads} key/value heads), head_dim {first.head_dim}, "
          f"attention {attn_implementation(model.config) or '?'}")
    print(f"head outputs enter: {first.output_name.replace('.0.', '.{layer}.')} ({type(first.output).__name__})")


def run(args: argparse.Namespace) -> None:
    target = Path(args.target)
    if (target / "adapter_config.json").is_file():
        _inspect_adapter(target, args.png)
    elif args.command == "adapter":
        raise UserError(f"{target / 'adapter_config.json'} not found: give the folder that save_pretrained() wrote")
    else:
        _inspect_model(args.target)
