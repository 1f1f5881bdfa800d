"""Reproduce the in-context linear regression testbed (He, Pan, Chen, Yang, ICML 2025) with headwise.

One layer of H softmax heads on y = beta^T x + eps (d = 5, L = 40, noise variance 0.1). Trains H = 1 and
H = 2 over several seeds, reads the heads' roles (KQ ~ omega I, OV reading y, the +/- pair), compares
the MSE with one-step gradient descent and the Bayes-optimal ridge, then uses headwise on it: head
gates fitted after a context-length shift against the closed-form optimal per-head scale, and
ablating one head of the pair (interventions.patch).

    .venv/bin/python benchmarks/icl_regression.py [--seeds 0 1 2 3 4 5 6 7] [--steps 1500] [--batch-size 256] [--json out.json]

The testbed is its own one-layer model: of the model flags the other benchmarks take, only --batch-size (tasks per
training step) applies; it runs on the CPU in float32, and --model / --attn-implementation are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import PLOTS, markdown_table, mean_spread, publish, pyplot, save_figure

import interventions as iv
from headwise.experiments import regression as R
from headwise.progress import disable_progress_bars

SHIFTS = (10, 20, 80, 160)
WHAT = "its own one-layer regression transformer"


def add_testbed_arguments(parser, batch_size: int = 256) -> None:
    """The model flags of the other benchmarks, for a script that trains its own model: ``--batch-size`` is its
    training batch; CPU and float32 only; ``--model`` and ``--attn-implementation`` do not apply."""
    group = parser.add_argument_group(f"model (this benchmark trains {WHAT}: only --batch-size changes anything)")
    group.add_argument("--model", help="does not apply (an error if given)")
    group.add_argument("--device", default="cpu", choices=["cpu"], help="cpu only: the testbed is far too small for a GPU")
    group.add_argument("--dtype", default="float32", choices=["float32"], help="float32 only")
    group.add_argument("--attn-implementation", help="does not apply (an error if given)")
    group.add_argument("--batch-size", type=int, default=batch_size, help="tasks per training step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--samples", type=int, default=20000, help="test tasks per MSE")
    parser.add_argument("--gate-steps", type=int, default=200, help="Adam steps of each head-gate fit")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--out", type=Path, default=PLOTS, help="where the plot goes (default benchmarks/plots)")
    add_testbed_arguments(parser)
    args = parser.parse_args()
    for flag in ("model", "attn_implementation"):
        if getattr(args, flag) is not None:
            parser.error(f"--{flag.replace('_', '-')} does not apply: this benchmark trains {WHAT}")
    disable_progress_bars()
    torch.set_num_threads(1)

    gd, ridge = R.one_step_gd_mse(samples=args.samples), R.ridge_mse(samples=args.samples)
    runs = {1: [], 2: []}
    curves = {1: [], 2: []}
    for heads in (1, 2):
        for seed in args.seeds:
            model, losses = R.train_regression(heads, steps=args.steps, lr=args.lr, seed=seed, batch=args.batch_size)
            roles = R.head_roles(model)
            runs[heads].append({"seed": seed, "model": model, "mse": R.evaluate_mse(model, samples=args.samples),
                                **{k: v.tolist() for k, v in roles.items()}})
            curves[heads].append(losses)
    pairs = [r for r in runs[2] if r["mse"] < 0.3]
    same_sign = [r for r in runs[2] if r["mse"] >= 0.3]

    settings = (f"The testbed ({WHAT.removeprefix('its own ')}), float32, cpu: {args.steps} Adam steps at lr {args.lr}, batch "
                f"{args.batch_size}, seeds {args.seeds}; MSE on {args.samples} fresh tasks.")
    rows = [
        ["one head", mean_spread([r["mse"] for r in runs[1]], 3), "0.40", "-"],
        ["two heads, all seeds", mean_spread([r["mse"] for r in runs[2]], 3), "0.24", f"{len(pairs)} of {len(runs[2])} form the +/- pair"],
        ["two heads, the pair runs", mean_spread([r["mse"] for r in pairs], 3) if pairs else "-", "0.24", ""],
        ["two heads, same-sign runs", mean_spread([r["mse"] for r in same_sign], 3) if same_sign else "-", "-", "a one-head basin"],
        ["one-step GD (best scale)", f"{gd:.3f}", "0.24", ""],
        ["Bayes ridge", f"{ridge:.3f}", "0.11", ""],
    ]
    sections = [markdown_table(["predictor", "test MSE (ours)", "paper", "note"], rows)]

    role_rows = []
    for heads in (1, 2):
        for r in runs[heads]:
            role_rows.append([heads, r["seed"], f"{r['mse']:.3f}", " / ".join(f"{w:+.3f}" for w in r["omega"]),
                              " / ".join(f"{m:+.3f}" for m in r["mu"]), f"{max(r['kq_offdiag']):.2f}", f"{max(r['ov_leak']):.2f}"])
    sections.append("## Head roles\n\n" + markdown_table(
        ["H", "seed", "MSE", "omega (KQ scale)", "mu (OV y->y)", "max KQ off-identity", "max OV leak"], role_rows))

    results = {"gd": gd, "ridge": ridge, "runs": {h: [{k: v for k, v in r.items() if k != "model"} for r in runs[h]] for h in runs}}
    if pairs:
        shift_rows, shift_data = [], []
        for length in SHIFTS:
            errors_ls, errors_cf, before, after = [], [], [], []
            for r in pairs:
                model = r["model"]
                mu = torch.tensor(r["mu"])
                fitted = R.fit_gate_scales(model, length, steps=args.gate_steps) * mu
                least = R.least_squares_head_scales(model, length, samples=args.samples)
                closed = R.optimal_head_scales(torch.tensor(r["omega"]), length)
                errors_ls.append(float(((fitted - least).abs() / least.abs()).max()))
                errors_cf.append(float(((fitted - closed).abs() / closed.abs()).max()))
                before.append(R.evaluate_mse(model, length=length, samples=args.samples))
                gated = _with_scales(model, fitted / mu)
                after.append(R.evaluate_mse(gated, length=length, samples=args.samples))
                gated.unload()
                shift_data.append({"length": length, "seed": r["seed"], "fitted": fitted.tolist(), "least_squares": least.tolist(), "closed_form": closed.tolist()})
            shift_rows.append([length, mean_spread(errors_ls, 3), mean_spread(errors_cf, 3), mean_spread(before, 3), mean_spread(after, 3)])
        sections.append(
            "## Head gates after a context-length shift (the pair runs)\n\n"
            f"A trainable head gate on both heads (interventions.HeadGateConfig, {args.gate_steps} Adam steps) is fitted on "
            "tasks of the new length; a_h * mu_h is compared with the least-squares optimum and the paper's closed form.\n\n"
            + markdown_table(["context L'", "|fitted - LS| / |LS| (max head)", "|fitted - closed form| / |closed form|",
                              "MSE, trained scales", "MSE, gated"], shift_rows))
        results["shifts"] = shift_data

        ablation_rows = []
        for head in range(2):
            ratios = []
            for r in pairs:
                with iv.patch(r["model"], {(0, head): "zero"}):
                    ratios.append(R.evaluate_mse(r["model"], samples=args.samples) / r["mse"])
            ablation_rows.append([head, mean_spread(ratios, 2)])
        sections.append("## Ablating one head of the pair (interventions.patch, zero)\n\n"
                        + markdown_table(["head ablated", "MSE / MSE of the pair"], ablation_rows))
        results["ablation"] = ablation_rows
        settings += f" Plot: `{_plot(curves, shift_data, gd, ridge, args.out).name}`."
    publish("In-context linear regression", settings, "\n\n".join(sections), args, **results)


def _with_scales(model, scales):
    import headwise

    gated = headwise.wrap(model, iv.HeadGateConfig(heads="all", scale=1.0))
    with torch.no_grad():
        for holder in gated.modules():
            if isinstance(holder, iv.HeadGateLayer):
                holder.gate_scale["default"].copy_(scales)
    return gated


def _plot(curves, shift_data, gd, ridge, folder: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for heads, colour in ((1, "tab:blue"), (2, "tab:orange")):
        for i, losses in enumerate(curves[heads]):
            smooth = torch.tensor(losses).unfold(0, 25, 25).mean(-1)
            left.plot(torch.arange(len(smooth)) * 25, smooth, color=colour, alpha=0.6, label=f"H={heads}" if i == 0 else None)
    left.axhline(gd, color="grey", ls="--", label="one-step GD")
    left.axhline(ridge, color="black", ls=":", label="Bayes ridge")
    left.set(xlabel="step", ylabel="training MSE", ylim=(0, 1.2), title="training")
    left.legend()
    for entry in shift_data:
        right.scatter(entry["length"], entry["closed_form"][0], marker="x", color="black")
        right.scatter(entry["length"], entry["fitted"][0], facecolors="none", edgecolors="tab:red")
        right.scatter(entry["length"], entry["least_squares"][0], marker=".", color="tab:green")
    right.set(xscale="log", xlabel="context length L'", ylabel="OV scale of head 0", title="gate fit (o) vs LS (.) vs closed form (x)")
    folder.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, str(folder.resolve() / "icl_regression.png"))  # an absolute name: save_figure keeps it


if __name__ == "__main__":
    main()
