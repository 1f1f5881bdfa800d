"""``headwise train METHOD``: fit an adapter on a data set and save it (PEFT format, model card, task record)."""

from __future__ import annotations

import argparse
import functools
import logging
import math
import time
from pathlib import Path

from .errors import UserError
from .options import classification, is_classification, load_model, unescape, word_pairs, write_task_file
from .report import duration, head_names, table

logger = logging.getLogger("headwise.cli")


def _output_folder(args) -> Path:
    out = Path(args.out)
    if out.is_file():
        raise UserError(f"--out {out} is a file: give a folder")
    if (out / "adapter_config.json").exists() and not args.overwrite:
        raise UserError(f"--out {out} already holds an adapter: pass --overwrite or another --out")
    return out


def check_plot_extra(args) -> None:
    """``--plot`` needs matplotlib: say so before any work."""
    import importlib.util

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UserError(f'--plot {args.plot} needs matplotlib: pip install "headwise[plot]", or drop --plot')


def _check_rows(args, rows) -> None:
    """Enough rows for the method, found before the model is loaded."""
    n_valid = max(1, round(args.valid * len(rows)))
    if args.method == "lofit" and len(rows) - n_valid < 1:
        raise UserError(f"--data {args.data} has {len(rows)} usable rows: LoFiT needs at least one to train on after "
                        f"{n_valid} held out (--valid {args.valid:g}); give more rows")
    if args.method == "soft-injection" and len(rows) - n_valid < args.shots + 1:
        raise UserError(f"--data {args.data} has {len(rows)} usable rows: soft injection needs more than --shots "
                        f"({args.shots}) rows to build prompts from after {n_valid} held out; give more rows or "
                        "lower --shots")


def _heads_count(value: float, num_layers: int, num_heads: int) -> int:
    total = num_layers * num_heads
    if value >= 1 and value > total:
        raise UserError(f"--heads {value:g}: the model has {total} heads; give a fraction below 1 or a count up to {total}")
    return max(1, round(value * total)) if value < 1 else int(value)


def _check_heads_in_config(args, config) -> None:
    """``--heads`` against the model's head count read from its config, before the weights load."""
    layers, heads = (getattr(config, name, None) for name in ("num_hidden_layers", "num_attention_heads"))
    if isinstance(layers, int) and isinstance(heads, int):
        _heads_count(args.heads, layers, heads)


def _train_lofit(args, rows, model, tokenizer) -> tuple:
    import headwise
    from lofit import select_heads, train_offsets

    from ..experiments.data import QA_TEMPLATE, training_set
    from ..experiments.training import LossRecorder

    template = unescape(args.template) or QA_TEMPLATE
    data = training_set(tokenizer, rows, template=template)
    sites = headwise.find_head_sites(model)
    total = len(sites) * sites[0].num_heads
    k = _heads_count(args.heads, len(sites), sites[0].num_heads)
    batches = math.ceil(len(data) / args.batch_size)
    select_epochs = max(1, math.ceil(args.select_steps / batches))
    logger.info("LoFiT on %d examples. Phase 1: scales on all %d heads, %d steps (%d epochs), keeps %d heads (%.1f%%). "
                "Phase 2: offsets on those heads, %g epochs, best of %d%% held out.", len(data), total,
                select_epochs * batches, select_epochs, k, 100 * k / total, args.epochs, round(100 * args.valid))
    phase1, phase2 = LossRecorder(), LossRecorder()
    start = time.perf_counter()
    selection = select_heads(model, data, k=k, l1=args.l1, lr=args.select_lr, epochs=select_epochs,
                             batch_size=args.batch_size, seed=args.seed, callbacks=[phase1])
    middle = time.perf_counter()
    wrapped = train_offsets(model, selection.heads, data, lr=args.lr or 0.2, epochs=args.epochs,
                            batch_size=args.batch_size, seed=args.seed, valid=args.valid, use_scale=args.use_scale,
                            callbacks=[phase2])
    end = time.perf_counter()
    losses = phase2.eval_losses
    best_step, best = min(losses, key=lambda item: item[1]) if losses else (0, float("nan"))
    summary = [
        ("phase 1: select heads", f"{phase1.steps} steps", duration(middle - start),
         f"{len(selection.heads)} of {total} heads: {head_names(selection.heads, 5)}"),
        ("phase 2: train offsets", f"{phase2.steps} steps", duration(end - middle),
         f"validation loss {losses[0][1]:.3f} -> {best:.3f} (kept step {best_step})" if losses else "no validation"),
    ]
    return wrapped, {"kind": "word_pairs", "template": template}, summary


def _train_soft_injection(args, rows, model, tokenizer) -> tuple:
    from soft_injection import SoftInjectionConfig, fit

    from ..experiments.data import QA_TEMPLATE

    template = unescape(args.template) or QA_TEMPLATE
    n_valid = max(1, round(args.valid * len(rows)))
    config = SoftInjectionConfig(template=template, n_prompts=args.prompts, n_shots=args.shots)
    logger.info("soft injection on %d examples (%d held out): task embedding from %d prompts of %d shots, then %d "
                "steps on theta", len(rows) - n_valid, n_valid, args.prompts, args.shots, args.steps)
    start = time.perf_counter()
    wrapped, history = fit(
        model, tokenizer, rows[:-n_valid], rows[-n_valid:], config=config, steps=args.steps, lr=args.lr or 0.2,
        batch_size=args.batch_size, eval_every=max(1, args.steps // 8), n_valid=n_valid, seed=args.seed, loss=args.loss,
    )
    summary = [("fit theta", f"{args.steps} steps", duration(time.perf_counter() - start),
                f"validation loss {history.valid_loss[0]:.3f} -> {history.best_loss:.3f} (kept step {history.best_step})")]
    return wrapped, {"kind": "word_pairs", "template": template}, summary


def _train_zerotuning(args, rows, model, tokenizer) -> tuple:
    import headwise
    from zerotuning import ZeroTuningConfig, calibrate, entropy_score, label_accuracy_score

    task, rows = rows
    prompts = [task.prompt(row) for row in rows]
    if args.calibration == "supervised":
        score = label_accuracy_score(tokenizer, prompts, [row["label"] for row in rows], task.label_words)
    else:
        score = entropy_score(tokenizer, prompts, task.label_words)
    logger.info("ZeroTuning: %s calibration of gamma on %d prompts over %s", args.calibration, len(prompts),
                ", ".join(f"{g:g}" for g in args.gammas))
    start = time.perf_counter()
    wrapped = headwise.wrap(model, ZeroTuningConfig(heads="all"))
    gamma, scores = calibrate(wrapped, score, gammas=args.gammas)
    what = "label accuracy" if args.calibration == "supervised" else "label entropy (lower is better)"
    summary = [("calibrate gamma", f"{len(scores)} values", duration(time.perf_counter() - start),
                f"gamma {gamma:g} on all heads; {what}: " + ", ".join(f"{g:g}: {s:.3f}" for g, s in scores.items()))]
    return wrapped, {"kind": "classification", "template": task.template, "label_words": task.label_words}, summary


TRAINERS = {"lofit": _train_lofit, "soft-injection": _train_soft_injection, "zerotuning": _train_zerotuning}


def run(args: argparse.Namespace) -> None:
    out = _output_folder(args)
    check_plot_extra(args)
    if args.method == "zerotuning":
        if not is_classification(args):
            raise UserError("zerotuning calibrates on classification data: pass --labels and --template, "
                            "or a reference set as --data (sst2, cb, rte, agnews)")
        rows = classification(args, "train")
        if not rows[1]:
            raise UserError(f"--data {args.data} has no rows to calibrate on")
    else:
        rows = word_pairs(args)
        _check_rows(args, rows)
    heads_check = functools.partial(_check_heads_in_config, args) if args.method == "lofit" else None
    model, tokenizer = load_model(args.model, check_config=heads_check)
    wrapped, task, summary = TRAINERS[args.method](args, rows, model, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out))
    write_task_file(out, {"method": args.method, "data": str(args.data), **task})
    from ..card import stored_parameter_count
    from ..loading import read_adapter_config

    count = stored_parameter_count(out, read_adapter_config(out))
    summary.append(("save", str(out), "", f"{count:,} trained values (adapter_model.safetensors)"))
    if args.plot:
        from .inspect import write_heads_png

        summary.append(("plot", str(write_heads_png(out, Path(args.plot))), "", "layers x heads"))
    print(table(("step", "work", "time", "result"), summary))
