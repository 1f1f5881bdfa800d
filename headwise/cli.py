"""The ``headwise`` command: look at a model's heads or at a saved adapter.

    headwise inspect [MODEL]     head sites of a model (a path, or the bundled smollm2-135m-instruct)
    headwise adapter DIR         what a saved adapter holds: type, base, shape, heads
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _inspect(model_name: str) -> None:
    import headwise

    if model_name in headwise.models.BUNDLED_MODELS:
        model, _ = headwise.load_bundled_model(model_name)
    else:
        from transformers import AutoModelForCausalLM

        if not Path(model_name).exists() and model_name.startswith((".", "/", "~")):
            raise UserError(f"no model at {model_name}: give a checkpoint folder, a Hub id or smollm2-135m-instruct")
        model = AutoModelForCausalLM.from_pretrained(model_name)
    sites = headwise.find_head_sites(model)
    first = sites[0]
    print(f"{model.config.model_type}: {len(sites)} layers x {first.num_heads} query heads "
          f"({first.num_kv_heads} key/value heads), head_dim {first.head_dim}, "
          f"attention {getattr(model.config, '_attn_implementation', '?')}")
    print(f"head outputs enter: {first.output_name.replace('.0.', '.{layer}.')} ({type(first.output).__name__})")


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


def _adapter(directory: str) -> None:
    path = Path(directory) / "adapter_config.json"
    if not path.exists():
        raise UserError(f"{path} not found: give the folder that save_pretrained() wrote")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(config, dict) or "peft_type" not in config:
        raise UserError(f"{path} holds no 'peft_type': it is not an adapter config")
    heads = config.get("heads")
    count = "all" if heads == "all" else len(heads)
    print(f"{config['peft_type']} adapter for {config.get('base_model_name_or_path')} ({config.get('model_type')}: "
          f"{config.get('num_layers')} layers x {config.get('num_heads')} heads, head_dim {config.get('head_dim')}); "
          f"heads: {count}; headwise {config.get('headwise_version')}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="headwise", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="head sites of a model")
    inspect.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    adapter = commands.add_parser("adapter", help="summary of a saved adapter")
    adapter.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            _inspect(args.model)
        else:
            _adapter(args.directory)
    except (UserError, ValueError, OSError) as error:  # user mistakes: one line, no traceback
        print(f"headwise: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
