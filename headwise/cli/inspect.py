"""``headwise inspect``: what a saved adapter holds (the heads' trained quantity, a PNG on request), or a model's
head sites."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .report import head_names

logger = logging.getLogger("headwise.cli")


@dataclass
class HeadPicture:
    """One number per head of a saved adapter (NaN where it does not act), and what the number is."""

    config: object
    matrix: object  # (layers, heads) float tensor
    heads: list[tuple[int, int]]
    label: str
    signed: bool

    def title(self) -> str:
        values = self.matrix[[l for l, _ in self.heads], [h for _, h in self.heads]]
        uniform = bool((values == values[0]).all()) if len(values) else False
        what = f"{self.config.method.value}: {len(self.heads)} heads"
        return what + (f", all at {values[0].item():.3g}" if uniform and len(values) > 1 else "")


def read_head_picture(folder: Path) -> HeadPicture:
    """Read a saved adapter's heads and its method's per-head quantity (``HeadLayer.head_quantity``)."""
    import torch
    from safetensors import safe_open

    from ..loading import CONFIG_NAME, WEIGHTS_NAME, AdapterFileError, read_adapter_config
    from ..registry import method_classes

    config = read_adapter_config(folder)
    layer_cls = method_classes(config.method)[1].tuner_layer_cls
    if not config.num_layers:
        raise AdapterFileError(f"{folder / CONFIG_NAME} records no model shape (num_layers / num_heads): save the adapter again")
    heads = config.resolve_heads(config.num_layers, config.num_heads)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise UserError(f"{weights} is missing: the folder must hold what save_pretrained() wrote")
    saved: dict[int, dict[str, torch.Tensor]] = {}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            layer = next((int(part) for part in key.split(".") if part.isdigit()), None)
            saved.setdefault(layer, {})[key.rsplit(".", 1)[-1]] = handle.get_tensor(key)
    matrix = torch.full((config.num_layers, config.num_heads), float("nan"))
    label, signed = "", False
    for layer in sorted({layer for layer, _ in heads}):
        layer_heads = sorted(head for l, head in heads if l == layer)
        values, label, signed = layer_cls.head_quantity(saved.get(layer, {}))
        matrix[layer, layer_heads] = values.float()
    return HeadPicture(config, matrix, heads, label, signed)


def write_heads_png(folder: Path, png: Path) -> Path:
    """A layers x heads heatmap of the adapter in ``folder``: its method's quantity, heads boxed (signed
    quantities on a red-blue scale centred on zero)."""
    from ..experiments.plots import plot_head_scores

    picture = read_head_picture(Path(folder))
    png.parent.mkdir(parents=True, exist_ok=True)
    return plot_head_scores(picture.matrix.nan_to_num(0.0), png, selected=picture.heads, title=picture.title(),
                            label=picture.label, diverging=picture.signed)


def _inspect_adapter(folder: Path, plot: str | None) -> None:
    from ..card import stored_parameter_count

    picture = read_head_picture(folder)
    config, heads = picture.config, picture.heads
    count = stored_parameter_count(folder, config)
    print(f"{config.method.value} adapter for {config.base_model_name_or_path} ({config.model_type}: "
          f"{config.num_layers} layers x {config.num_heads} heads, head_dim {config.head_dim})")
    print(f"heads: {len(heads)} of {config.num_layers * config.num_heads}: {head_names(sorted(heads), 12)}")
    print(f"trainable parameters: {count:,}; headwise {config.headwise_version}")
    values = sorted(((picture.matrix[l, h].item(), l, h) for l, h in heads), key=lambda item: -abs(item[0]))
    print(f"per head: {picture.label}; largest: " + ", ".join(f"L{l}.H{h} {v:+.3g}" if picture.signed else
                                                             f"L{l}.H{h} {v:.3g}" for v, l, h in values[:5]))
    if plot:
        print(f"heads PNG: {write_heads_png(folder, Path(plot))}")


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
    from .train import check_plot_extra

    check_plot_extra(args)
    target = Path(args.target)
    if (target / "adapter_config.json").is_file():
        _inspect_adapter(target, args.plot)
    elif args.command == "adapter":
        raise UserError(f"{target / 'adapter_config.json'} not found: give the folder that save_pretrained() wrote")
    else:
        if args.plot:
            raise UserError(f"--plot draws an adapter's heads; {args.target} is a model, not an adapter folder")
        _inspect_model(args.target)
