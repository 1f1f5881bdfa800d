"""``headwise train METHOD``: fit an adapter on a data set and save it (PEFT format, model card, heads PNG)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .errors import UserError
from .options import add_data_options, add_model_option, classification, is_classification, load_model, unescape, word_pairs, write_task_file

logger = logging.getLogger("headwise.cli")

METHODS = ("lofit", "soft-injection", "zerotuning")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "train", help="train an adapter and save it",
        description="Train a head-level adapter on --data and save it to --out (adapter_config.json, "
                    "adapter_model.safetensors, README.md model card, headwise_task.json, heads.png).",
    )
    parser.add_argument("method", choices=METHODS, help="lofit | soft-injection | zerotuning")
    add_model_option(parser)
    add_data_options(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to save the adapter in")
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    lofit = parser.add_argument_group("lofit (word pairs: input -> output)")
    lofit.add_argument("--heads", type=float, default=0.03,
                       help="heads to adapt: a fraction of all heads (< 1) or a count (default 0.03)")
    lofit.add_argument("--l1", type=float, default=1e-3, help="L1 strength of head selection (default 1e-3)")
    lofit.add_argument("--select-lr", type=float, default=5e-3, help="learning rate of head selection (default 5e-3)")
    lofit.add_argument("--epochs", type=float, default=5, help="epochs of offset training (default 5)")
    lofit.add_argument("--use-scale", action="store_true", help="train scales as well as offsets in phase 2")
    shared = parser.add_argument_group("lofit and soft-injection")
    shared.add_argument("--lr", type=float, help="learning rate (lofit offsets 0.2 in head-RMS units; soft-injection 0.2)")
    shared.add_argument("--valid", type=float, default=0.2, help="share of the data held out to keep the best check (default 0.2)")
    shared.add_argument("--batch-size", type=int, default=8)
    soft = parser.add_argument_group("soft-injection (word pairs)")
    soft.add_argument("--steps", type=int, default=400, help="optimiser steps on theta (default 400)")
    soft.add_argument("--shots", type=int, default=10, help="demonstrations per extraction prompt (default 10)")
    soft.add_argument("--prompts", type=int, default=50, help="few-shot prompts averaged into the task embedding (default 50)")
    soft.add_argument("--loss", choices=("answer", "first_token"), default="answer",
                      help="fit the whole answer and its newline (default) or the first answer token (the paper)")
    zero = parser.add_argument_group("zerotuning (classification: --template and --labels, or sst2 / cb / rte / agnews)")
    zero.add_argument("--calibration", choices=("unsupervised", "supervised"), default="unsupervised",
                      help="pick gamma by minimum label entropy (no labels used) or by accuracy (default unsupervised)")
    zero.add_argument("--gammas", type=float, nargs="+", default=[0.5, 0.8, 1.0, 1.5, 2.5], help="gamma grid")
    parser.set_defaults(run=run)


def _output_folder(args) -> Path:
    out = Path(args.out)
    if out.is_file():
        raise UserError(f"--out {out} is a file: give a folder")
    if (out / "adapter_config.json").exists() and not args.overwrite:
        raise UserError(f"{out} already holds an adapter: pass --overwrite or another --out")
    return out


def _heads_count(value: float, num_layers: int, num_heads: int):
    if value <= 0:
        raise UserError(f"--heads must be > 0, got {value:g}")
    if value < 1:
        return value
    if value != int(value) or value > num_layers * num_heads:
        raise UserError(f"--heads {value:g}: give a fraction below 1 or a whole count up to {num_layers * num_heads}")
    return int(value)


def _train_lofit(args, rows, model, tokenizer):
    import headwise
    from lofit import select_heads, train_offsets

    from ..experiments.data import QA_TEMPLATE, training_set

    template = unescape(args.template) or QA_TEMPLATE
    data = training_set(tokenizer, rows, template=template)
    sites = headwise.find_head_sites(model)
    k = _heads_count(args.heads, len(sites), sites[0].num_heads)
    logger.info("LoFiT on %d examples: phase 1 selects %s heads, phase 2 trains their offsets", len(data), k)
    selection = select_heads(model, data, k=k, l1=args.l1, lr=args.select_lr, batch_size=args.batch_size, seed=args.seed)
    wrapped = train_offsets(
        model, selection.heads, data, lr=args.lr or 0.2, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, valid=args.valid, use_scale=args.use_scale,
    )
    return wrapped, {"kind": "word_pairs", "template": template}, selection


def _train_soft_injection(args, rows, model, tokenizer):
    from soft_injection import SoftInjectionConfig, fit

    from ..experiments.data import QA_TEMPLATE

    template = unescape(args.template) or QA_TEMPLATE
    pairs = rows
    n_valid = max(1, round(args.valid * len(pairs)))
    if len(pairs) - n_valid < args.shots + 1:
        raise UserError(f"{len(pairs)} rows are too few: soft injection needs more than --shots ({args.shots}) "
                        f"training rows after {n_valid} held out")
    config = SoftInjectionConfig(template=template, n_prompts=args.prompts, n_shots=args.shots)
    logger.info("soft injection on %d examples (%d held out), %d steps", len(pairs) - n_valid, n_valid, args.steps)
    wrapped, history = fit(
        model, tokenizer, pairs[:-n_valid], pairs[-n_valid:], config=config, steps=args.steps, lr=args.lr or 0.2,
        batch_size=args.batch_size, eval_every=max(1, args.steps // 8), n_valid=n_valid, seed=args.seed, loss=args.loss,
    )
    logger.info("best validation loss %.4f at step %d", history.best_loss, history.best_step)
    return wrapped, {"kind": "word_pairs", "template": template}, None


def _train_zerotuning(args, rows, model, tokenizer):
    import headwise
    from zerotuning import ZeroTuningConfig, calibrate, entropy_score, label_accuracy_score

    task, rows = rows
    prompts = [task.prompt(row) for row in rows]
    if args.calibration == "supervised":
        score = label_accuracy_score(tokenizer, prompts, [row["label"] for row in rows], task.label_words)
    else:
        score = entropy_score(tokenizer, prompts, task.label_words)
    wrapped = headwise.wrap(model, ZeroTuningConfig(heads="all"))
    gamma, table = calibrate(wrapped, score, gammas=args.gammas)
    logger.info("gamma %s (%s score per gamma: %s)", gamma, args.calibration,
                ", ".join(f"{g:g}: {s:.4f}" for g, s in table.items()))
    return wrapped, {"kind": "classification", "template": task.template, "label_words": task.label_words}, None


TRAINERS = {"lofit": _train_lofit, "soft-injection": _train_soft_injection, "zerotuning": _train_zerotuning}


def run(args: argparse.Namespace) -> None:
    out = _output_folder(args)
    if args.method == "zerotuning":
        if not is_classification(args):
            raise UserError("zerotuning calibrates on classification data: pass --labels (and --template), "
                            "or a reference set (sst2, cb, rte, agnews)")
        rows = classification(args, "train")
    else:
        rows = word_pairs(args)  # read and checked before the model is loaded
    model, tokenizer = load_model(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    wrapped, task, selection = TRAINERS[args.method](args, rows, model, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out))
    write_task_file(out, {"method": args.method, "data": str(args.data), **task})
    from .inspect import write_heads_png

    png = write_heads_png(out, out / "heads.png", scores=None if selection is None else selection.scores)
    print(f"saved {args.method} adapter to {out}" + (f" (heads: {png})" if png else ""))
