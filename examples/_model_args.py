"""The model flags every example takes, named as the benchmarks name them (examples run standalone: a script's
own folder is on ``sys.path``, so ``from _model_args import ...`` works from any working directory)."""

from __future__ import annotations

import torch

DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash_attention_2")


def add_model_arguments(parser, batch_size: int = 8, attn_implementation: str = "sdpa",
                        model: str = "smollm2-135m-instruct") -> None:
    """``--model --device --dtype --attn-implementation --batch-size``: run an example on any decoder, not only
    the bundled SmolLM2-135M-Instruct (a bundled name, a Hub id or a local folder)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=model, help="bundled name, Hub id or local folder of the base model")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, mps ...")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="the base model's dtype")
    group.add_argument("--attn-implementation", default=attn_implementation, choices=ATTENTION)
    group.add_argument("--batch-size", type=int, default=batch_size, help="rows per evaluation (and training) batch")


def load_model(args, **overrides):
    """``(model, tokenizer)`` as the model flags say, on ``--device`` in eval mode; ``overrides`` replace flags."""
    import headwise

    options = {"dtype": getattr(torch, args.dtype), "attn_implementation": args.attn_implementation, **overrides}
    model, tokenizer = headwise.load_base_model(args.model, **options)
    return model.to(args.device).eval(), tokenizer


def trainer_device(args) -> dict:
    """``TrainingArguments`` keywords that keep a Trainer on ``--device`` (it would move to a GPU it sees)."""
    return {"use_cpu": args.device == "cpu"}
