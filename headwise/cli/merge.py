"""``headwise merge DIR --out DIR``: fold an adapter into its base and save a plain transformers checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .errors import UserError
from .options import add_model_option, load_model

logger = logging.getLogger("headwise.cli")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "merge", help="merge an adapter into its base model and save the checkpoint",
        description="Merge the adapter into the base model's weights (LoFiT: offsets into the output projection's "
                    "bias, scales into its weight) and save a checkpoint that loads with transformers alone. Methods "
                    "whose math cannot be folded into weights (soft injection, ZeroTuning) are refused.",
    )
    parser.add_argument("adapter", metavar="DIR", help="an adapter folder (or Hub repo) that save_pretrained wrote")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the merged checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    add_model_option(parser, required=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import headwise

    from ..loading import resolve_adapter_folder

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise UserError(f"{out} exists and is not empty: pass --overwrite or another --out")
    if args.model is None:
        model, tokenizer = headwise.load_adapter_model(args.adapter)
    else:
        base, tokenizer = load_model(args.model)
        model = headwise.from_pretrained(base, str(resolve_adapter_folder(args.adapter)))
    merged = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    print(f"merged checkpoint saved to {out} (load it with AutoModelForCausalLM.from_pretrained)")
