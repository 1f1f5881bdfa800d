"""The in-context regression testbed: train two softmax heads, read their roles, and edit them with headwise.

    python examples/icl_regression.py [--seed 4] [--steps 1500] [--batch-size 256]

One layer of two attention heads learns y = beta^T x + eps in context (d = 5, L = 40). Most seeds end as a
+/- pair of heads (a debiased one-step gradient descent, MSE ~0.25); some end with both heads of one sign, at
the one-head error (~0.41). benchmarks/icl_regression.py trains until the loss curve is flat before it calls
that outcome a basin.
Then: a head gate fitted at a shorter context length against the closed-form optimal scale, and one head
of the pair ablated. The testbed is its own one-layer model: of the model flags the other examples take, only
--batch-size (tasks per training step) applies; it runs on the CPU in float32.
"""

from __future__ import annotations

import argparse

from headwise.experiments import regression as R
import interventions as iv

WHAT = "its own one-layer regression transformer"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--gate-steps", type=int, default=200, help="Adam steps of each head-gate fit")
    parser.add_argument("--samples", type=int, default=20000, help="test tasks per MSE")
    R.add_testbed_arguments(parser, batch_size=256, what=WHAT)
    args = parser.parse_args()
    R.check_testbed_arguments(parser, args, WHAT)
    model, _ = R.train_regression(num_heads=2, steps=args.steps, lr=1e-2, seed=args.seed, batch=args.batch_size)
    roles = R.head_roles(model)
    samples = args.samples
    mse = R.evaluate_mse(model, samples=samples)
    print(f"test MSE {mse:.3f} (one-step GD {R.one_step_gd_mse(samples=samples):.3f}, Bayes ridge {R.ridge_mse(samples=samples):.3f})")
    print(f"KQ scales omega {roles['omega'].tolist()}, OV scales mu {roles['mu'].tolist()}")
    for length in (10, 160):
        fitted = R.fit_gate_scales(model, length, steps=args.gate_steps) * roles["mu"]
        closed = R.optimal_head_scales(roles["omega"], length)
        print(f"context {length}: gate-fitted OV scales {fitted.tolist()} vs closed form {closed.tolist()}")
    with iv.patch(model, {(0, 0): "zero"}):
        ablated = R.evaluate_mse(model, samples=samples)
        print(f"head 0 ablated: MSE {ablated:.3f} ({ablated / mse:.2f}x)")


if __name__ == "__main__":
    main()
