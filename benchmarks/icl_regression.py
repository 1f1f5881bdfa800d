"""Reproduce the in-context linear regression testbed (He, Pan, Chen, Yang, ICML 2025) with headwise.

One layer of H softmax heads on y = beta^T x + eps (d = 5, L = 40, noise variance 0.1). Trains H = 1 and
H = 2 over several seeds, reads the heads' roles (KQ ~ omega I, OV reading y, the +/- pair), compares
the MSE with one-step gradient descent and the Bayes-optimal ridge, then uses headwise on it: head
gates fitted after a context-length shift against the closed-form optimal per-head scale, and
ablating one head of the pair (interventions.patch).

    .venv/bin/python benchmarks/icl_regression.py [--seeds 0 1 2 3 4 5 6 7] [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from common import machine, markdown_table, pyplot, save_figure, mean_spread

import interventions as iv
from headwise.experiments import regression as R
from headwise.progress import disable_progress_bars

SHIFTS = (10, 20, 80, 160)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--samples", type=int, default=20000, help="test tasks per MSE")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    disable_progress_bars()
    torch.set_num_threads(1)

    gd, ridge = R.one_step_gd_mse(samples=args.samples), R.ridge_mse(samples=args.samples)
    runs = {1: [], 2: []}
    curves = {1: [], 2: []}
    for heads in (1, 2):
        for seed in args.seeds:
            model, losses = R.train_regression(heads, steps=args.steps, lr=args.lr, seed=seed)
            roles = R.head_roles(model)
            runs[heads].append({"seed": seed, "model": model, "mse": R.evaluate_mse(model, samples=args.samples),
                                **{k: v.tolist() for k, v in roles.items()}})
            curves[heads].append(losses)
    pairs = [r for r in runs[2] if r["mse"] < 0.3]
    same_sign = [r for r in runs[2] if r["mse"] >= 0.3]

    print(f"# In-context linear regression, {machine()}\n")
    print(f"{args.steps} Adam steps at lr {args.lr}, batch 256, seeds {args.seeds}; MSE on {args.samples} fresh tasks.\n")
    rows = [
        ["one head", mean_spread([r["mse"] for r in runs[1]], 3), "0.40", "-"],
        ["two heads, all seeds", mean_spread([r["mse"] for r in runs[2]], 3), "0.24", f"{len(pairs)} of {len(runs[2])} form the +/- pair"],
        ["two heads, the pair runs", mean_spread([r["mse"] for r in pairs], 3) if pairs else "-", "0.24", ""],
        ["two heads, same-sign runs", mean_spread([r["mse"] for r in same_sign], 3) if same_sign else "-", "-", "a one-head basin"],
        ["one-step GD (best scale)", f"{gd:.3f}", "0.24", ""],
        ["Bayes ridge", f"{ridge:.3f}", "0.11", ""],
    ]
    print(markdown_table(["predictor", "test MSE (ours)", "paper", "note"], rows))

    print("\n## Head roles\n")
    role_rows = []
    for heads in (1, 2):
        for r in runs[heads]:
            role_rows.append([heads, r["seed"], f"{r['mse']:.3f}", " / ".join(f"{w:+.3f}" for w in r["omega"]),
                              " / ".join(f"{m:+.3f}" for m in r["mu"]), f"{max(r['kq_offdiag']):.2f}", f"{max(r['ov_leak']):.2f}"])
    print(markdown_table(["H", "seed", "MSE", "omega (KQ scale)", "mu (OV y->y)", "max KQ off-identity", "max OV leak"], role_rows))

    results = {"gd": gd, "ridge": ridge, "runs": {h: [{k: v for k, v in r.items() if k != "model"} for r in runs[h]] for h in runs}}
    if pairs:
        print("\n## Head gates after a context-length shift (the pair runs)\n")
        print("A trainable head gate on both heads (interventions.HeadGateConfig, 200 Adam steps) is fitted on tasks of")
        print("the new length; a_h * mu_h is compared with the least-squares optimum and the paper's closed form.\n")
        shift_rows, shift_data = [], []
        for length in SHIFTS:
            errors_ls, errors_cf, before, after = [], [], [], []
            for r in pairs:
                model = r["model"]
                mu = torch.tensor(r["mu"])
                fitted = R.fit_gate_scales(model, length) * mu
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
        print(markdown_table(["context L'", "|fitted - LS| / |LS| (max head)", "|fitted - closed form| / |closed form|", "MSE, trained scales", "MSE, gated"], shift_rows))
        results["shifts"] = shift_data

        print("\n## Ablating one head of the pair (interventions.patch, zero)\n")
        ablation_rows = []
        for head in range(2):
            ratios = []
            for r in pairs:
                with iv.patch(r["model"], {(0, head): "zero"}):
                    ratios.append(R.evaluate_mse(r["model"], samples=args.samples) / r["mse"])
            ablation_rows.append([head, mean_spread(ratios, 2)])
        print(markdown_table(["head ablated", "MSE / MSE of the pair"], ablation_rows))
        results["ablation"] = ablation_rows
        _plot(curves, shift_data, gd, ridge)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _with_scales(model, scales):
    import headwise

    gated = headwise.wrap(model, iv.HeadGateConfig(heads="all", scale=1.0))
    with torch.no_grad():
        for holder in gated.modules():
            if isinstance(holder, iv.HeadGateLayer):
                holder.gate_scale["default"].copy_(scales)
    return gated


def _plot(curves, shift_data, gd, ridge) -> None:
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
    save_figure(fig, "icl_regression.png")


if __name__ == "__main__":
    main()
