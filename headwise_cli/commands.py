"""The subcommands' arguments (argparse only: ``--help`` and argument errors need neither torch nor a model).

Each command names the module of ``headwise.cli`` whose ``run(args)`` does the work.
"""

from __future__ import annotations

import argparse

from .arguments import (
    baseline, fraction, heads_amount, non_negative_float, non_negative_int, positive_float, positive_int,
)

TRAIN_METHODS = ("lofit", "soft-injection", "zerotuning")


def _model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--model", required=required, metavar="NAME_OR_PATH",
        help="base model: a checkpoint folder, a Hub id, or smollm2-135m-instruct (the bundled model)"
        + ("" if required else "; default: the base the adapter records"),
    )


def _data(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True, metavar="SOURCE",
                       help="JSON / JSONL / CSV file, Hub dataset name, or reference task name (antonym, sst2, ...)")
    group.add_argument("--data-dir", metavar="FOLDER", help="folder of the reference tasks (default: $HEADWISE_DATA)")
    group.add_argument("--split", default="train", help="split of a Hub dataset (default: train)")
    group.add_argument("--input-column", default="input", help="word-pair data: column of the query (default: input)")
    group.add_argument("--output-column", default="output", help="word-pair data: column of the answer (default: output)")
    group.add_argument("--template", help="prompt template naming the row's columns, e.g. 'Review: {text}\\nSentiment:' "
                                          "(word pairs default: 'Q: {input}\\nA:')")
    group.add_argument("--labels", nargs="+", metavar="WORD", help="classification data: one label word per class")
    group.add_argument("--label-column", default="label", help="classification data: class index or label word column")
    group.add_argument("--limit", type=positive_int, metavar="N", help="use at most N rows")
    group.add_argument("--seed", type=non_negative_int, default=0, help="seed of the data order, initialisation and batches")


def add_train(commands) -> None:
    parser = commands.add_parser(
        "train", help="train an adapter and save it",
        description="Train a head-level adapter on --data and save it to --out (adapter_config.json, "
                    "adapter_model.safetensors, README.md model card, headwise_task.json). Progress and the time "
                    "left are shown for every long step; a summary table ends the run.",
    )
    parser.add_argument("method", choices=TRAIN_METHODS, help="lofit | soft-injection | zerotuning")
    _model(parser)
    _data(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to save the adapter in")
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    parser.add_argument("--plot", metavar="FILE", help="also write a layers x heads PNG of what was trained")
    lofit = parser.add_argument_group("lofit (word pairs: input -> output)")
    lofit.add_argument("--heads", type=heads_amount, default=0.03,
                       help="heads to adapt: a fraction of all heads (< 1) or a count (default 0.03)")
    lofit.add_argument("--l1", type=non_negative_float, default=1e-3, help="L1 strength of head selection (default 1e-3)")
    lofit.add_argument("--select-lr", type=positive_float, default=5e-3, help="learning rate of head selection (default 5e-3)")
    lofit.add_argument("--select-steps", type=positive_int, default=40,
                       help="optimiser steps of head selection, rounded up to whole epochs of the data (default 40)")
    lofit.add_argument("--epochs", type=positive_float, default=5, help="epochs of offset training (default 5)")
    lofit.add_argument("--use-scale", action="store_true", help="train scales as well as offsets in phase 2")
    shared = parser.add_argument_group("lofit and soft-injection")
    shared.add_argument("--lr", type=positive_float,
                        help="learning rate (lofit offsets 0.2 in head-RMS units; soft-injection 0.2)")
    shared.add_argument("--valid", type=fraction, default=0.2,
                        help="share of the data held out to keep the best check (default 0.2)")
    shared.add_argument("--batch-size", type=positive_int, default=8)
    soft = parser.add_argument_group("soft-injection (word pairs)")
    soft.add_argument("--steps", type=positive_int, default=400, help="optimiser steps on theta (default 400)")
    soft.add_argument("--shots", type=positive_int, default=10, help="demonstrations per extraction prompt (default 10)")
    soft.add_argument("--prompts", type=positive_int, default=50,
                      help="few-shot prompts averaged into the task embedding (default 50)")
    soft.add_argument("--loss", choices=("answer", "first_token"), default="answer",
                      help="fit the whole answer and its newline (default) or the first answer token (the paper)")
    zero = parser.add_argument_group("zerotuning (classification: --template and --labels, or sst2 / cb / rte / agnews)")
    zero.add_argument("--calibration", choices=("unsupervised", "supervised"), default="unsupervised",
                      help="pick gamma by minimum label entropy (no labels used) or by accuracy (default unsupervised)")
    zero.add_argument("--gammas", type=positive_float, nargs="+", default=[0.5, 0.8, 1.0, 1.5, 2.5],
                      help="gamma grid (default 0.5 0.8 1.0 1.5 2.5)")
    parser.set_defaults(module="train")


def add_eval(commands) -> None:
    parser = commands.add_parser(
        "eval", help="accuracy of a saved adapter on a data set",
        description="Word-pair data: first-token accuracy and greedy exact match on zero-shot prompts. "
                    "Classification data (--labels, a reference set, or an adapter trained on one): label-constrained "
                    "and free-generation accuracy. The prompt format defaults to the one the adapter was trained with.",
    )
    parser.add_argument("adapter", metavar="DIR", help="an adapter folder (or Hub repo) that save_pretrained wrote")
    _model(parser, required=False)
    _data(parser)
    parser.add_argument(
        "--baseline", type=baseline, nargs="?", const=("zero-shot", 0), action="append", metavar="zero-shot|few-shot[=K]",
        help="also score the base model (adapter disabled): on the same zero-shot prompts (the default), or on "
             "few-shot prompts with K demonstrations drawn per query from the other rows (default K 10); repeatable",
    )
    parser.add_argument("--show", type=non_negative_int, default=0, metavar="N", help="print the first N predictions")
    parser.add_argument("--predictions", metavar="FILE", help="write every prediction to FILE (JSON lines)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(module="evaluate")


def add_merge(commands) -> None:
    parser = commands.add_parser(
        "merge", help="merge an adapter into its base model and save the checkpoint",
        description="Merge the adapter into the base model's weights (LoFiT: offsets into the output projection's "
                    "bias, scales into its weight; head gates) and save a checkpoint that loads with transformers "
                    "alone. Methods whose math cannot be folded into weights (soft injection, ZeroTuning) are refused.",
    )
    parser.add_argument("adapter", metavar="DIR", help="an adapter folder (or Hub repo) that save_pretrained wrote")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the merged checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    _model(parser, required=False)
    parser.set_defaults(module="merge")


def add_inspect(commands) -> None:
    description = ("With an adapter folder: its method, base model, heads, trainable parameters and the heads' trained "
                   "quantity (with its sign and unit); --plot FILE draws it as a layers x heads PNG. With a model "
                   "(folder, Hub id or smollm2-135m-instruct): where its heads are.")
    parser = commands.add_parser("inspect", help="a saved adapter (config, parameters, heads) or a model's head sites",
                                 description=description)
    parser.add_argument("target", nargs="?", default="smollm2-135m-instruct", metavar="DIR_OR_MODEL")
    parser.add_argument("--plot", "--png", dest="plot", metavar="FILE", help="write a layers x heads PNG of the adapter")
    parser.set_defaults(module="inspect")
    alias = commands.add_parser("adapter", help="same as inspect DIR", description=description)  # the earlier name
    alias.add_argument("target", metavar="DIR")
    alias.add_argument("--plot", "--png", dest="plot", metavar="FILE", help="write a layers x heads PNG of the adapter")
    alias.set_defaults(module="inspect")


COMMANDS = (add_train, add_eval, add_merge, add_inspect)
