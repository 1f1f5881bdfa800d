"""``headwise merge DIR --out DIR``: fold an adapter into its base and save a plain transformers checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .errors import UserError
from .options import load_model

logger = logging.getLogger("headwise.cli")

INSTEAD = {  # what to do with a method whose math cannot be folded into weights
    "SOFT_INJECTION": "it mixes a task embedding into the last prompt token only; keep it as an adapter "
                      "(headwise eval / headwise.load_adapter_model) instead of merging",
    "ZEROTUNING": "it biases attention logits, which no weight holds; keep it as an adapter "
                  "(headwise eval / headwise.load_adapter_model) instead of merging",
}


def _check_mergeable(folder: Path) -> None:
    """Refuse, before loading any model, a method that cannot merge; say what to do instead."""
    import json

    try:
        method = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
    except (OSError, ValueError, AttributeError):
        return  # the loader names what is wrong with the file
    if method in INSTEAD:
        name = {"SOFT_INJECTION": "soft injection", "ZEROTUNING": "ZeroTuning"}[method]
        raise UserError(f"{name} cannot be merged into weights: {INSTEAD[method]}")


def run(args: argparse.Namespace) -> None:
    import headwise

    from ..loading import resolve_adapter_folder

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise UserError(f"--out {out} exists and is not empty: pass --overwrite or another --out")
    if Path(args.adapter).is_dir():
        _check_mergeable(Path(args.adapter))
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
