"""The in-context linear regression testbed (He, Pan, Chen, Yang, ICML 2025) as a ``transformers`` model.

One layer of H softmax attention heads, no MLP, norm or positions. Token i is ``z_i = [x_i; y_i]``
with ``y_i = beta^T x_i + eps``; the query is ``[x_q; 0]`` and attends to the L context tokens (not to
itself); the prediction is the y entry of its attention output. With ``x ~ N(0, I_d)``,
``beta ~ N(0, I_d / d)`` and noise variance ``sigma2`` a trained model's heads have known roles (KQ ~
omega_h I on the x block, OV reading only y; with two heads a +/- pair, a debiased one-step gradient
descent) and the best per-head OV scale given the omegas has a closed form, so every head-level edit
has a known right answer. The attention module uses the standard names (``model.layers.0.self_attn.
{q,k,v,o}_proj``), so headwise attaches to it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..compat import set_attn_implementation

__all__ = [
    "RegressionConfig", "RegressionTransformer", "RegressionOutput", "sample_tasks", "train_regression",
    "train_until_flat", "flatness", "head_roles", "optimal_head_scales", "least_squares_head_scales", "fit_gate_scales",
    "one_step_gd_mse", "ridge_mse", "evaluate_mse",
]


class RegressionConfig(PretrainedConfig):
    model_type = "icl_regression"

    def __init__(self, dim: int = 5, num_attention_heads: int = 2, init_std: float = 0.05, **kwargs) -> None:
        self.dim = dim
        self.hidden_size = dim + 1
        self.head_dim = dim + 1
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads
        self.num_hidden_layers = 1
        self.init_std = init_std
        super().__init__(**kwargs)


@dataclass
class RegressionOutput(ModelOutput):
    loss: torch.Tensor | None = None
    predictions: torch.Tensor | None = None  # (B,) the y entry of the query's output
    logits: torch.Tensor | None = None  # (B, T, d + 1) every position's output (for tools that read logits)


class RegressionAttention(nn.Module):
    """Multi-head softmax attention, logits ``q_h . k_h`` (no 1/sqrt(d): the scale is learned)."""

    def __init__(self, config: RegressionConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        width, heads = config.hidden_size, config.num_attention_heads
        self.num_heads, self.head_dim = heads, config.head_dim
        self.q_proj = nn.Linear(width, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(width, heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(width, heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, width, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, cache=None, **kwargs):
        shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, H, T, hd)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        scores = query @ key.transpose(-1, -2)  # (B, H, T, T)
        if attention_mask is not None:
            scores = scores + attention_mask[..., : key.shape[-2]]
        probs = scores.float().softmax(-1).to(value.dtype)
        heads = (probs @ value).transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)  # (B, T, H*hd)
        return self.o_proj(heads), probs


class RegressionLayer(nn.Module):
    def __init__(self, config: RegressionConfig) -> None:
        super().__init__()
        self.self_attn = RegressionAttention(config)


class RegressionStack(nn.Module):
    def __init__(self, config: RegressionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([RegressionLayer(config)])


class RegressionTransformer(PreTrainedModel):
    """``forward(inputs_embeds (B, L+1, d+1), labels (B,))``: the query is the last token."""

    config_class = RegressionConfig
    base_model_prefix = "model"
    _supports_attention_backend = False

    def __init__(self, config: RegressionConfig) -> None:
        super().__init__(config)
        self.model = RegressionStack(config)
        set_attn_implementation(self.config, "eager")  # the module takes a 4-D additive mask
        self.prepare_inputs_for_generation = None  # PEFT's causal-LM wrapper reads it; the testbed never generates
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, RegressionAttention):
            # The paper's parametrisation: one free KQ and one free OV matrix per head. W_Q and W_V are fixed
            # identity blocks, so W_K^T W_Q = W_K,h^T and W_O W_V = W_O[:, h] are the trained matrices.
            eye = torch.eye(module.head_dim).repeat(module.num_heads, 1)  # (H*hd, hd)
            for fixed in (module.q_proj, module.v_proj):
                with torch.no_grad():
                    fixed.weight.copy_(eye)
                fixed.weight.requires_grad_(False)

    @staticmethod
    def context_mask(length: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """(1, 1, T, T) additive mask: causal, and the query (last token) does not attend to itself."""
        allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        allowed[-1, -1] = False
        return torch.zeros(length, length, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[None, None]

    def forward(self, inputs_embeds: torch.Tensor, labels: torch.Tensor | None = None, attention_mask=None, **kwargs) -> RegressionOutput:
        mask = self.context_mask(inputs_embeds.shape[1], inputs_embeds.dtype, inputs_embeds.device)
        attention = self.model.layers[0].self_attn
        output, _ = attention(hidden_states=inputs_embeds, attention_mask=mask)
        predictions = output[:, -1, -1]
        loss = None if labels is None else (predictions - labels).pow(2).mean()
        return RegressionOutput(loss=loss, predictions=predictions, logits=output)


def sample_tasks(batch: int, length: int, dim: int = 5, sigma2: float = 0.1, generator: torch.Generator | None = None):
    """(inputs (B, L+1, d+1), targets (B,)): L context pairs and a query with its y zeroed."""
    x = torch.randn(batch, length + 1, dim, generator=generator)
    beta = torch.randn(batch, dim, 1, generator=generator) / math.sqrt(dim)
    y = (x @ beta)[..., 0] + math.sqrt(sigma2) * torch.randn(batch, length + 1, generator=generator)
    inputs = torch.cat([x, y[..., None]], dim=-1)
    targets = inputs[:, -1, -1].clone()
    inputs[:, -1, -1] = 0.0
    return inputs, targets


def train_regression(
    num_heads: int, steps: int = 3000, length: int = 40, dim: int = 5, sigma2: float = 0.1, lr: float = 1e-3,
    batch: int = 256, seed: int = 0, init_std: float = 0.05,
) -> tuple[RegressionTransformer, list[float]]:
    """Train the testbed with Adam on fresh tasks every step; returns the model and the loss curve."""
    from ..progress import progress

    torch.manual_seed(seed)
    model = RegressionTransformer(RegressionConfig(dim=dim, num_attention_heads=num_heads, init_std=init_std))
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in progress(range(steps), f"in-context regression, H={num_heads}"):
        losses.append(_training_step(model, optimizer, batch, length, dim, sigma2, generator))
    return model.eval(), losses


def _training_step(model, optimizer, batch: int, length: int, dim: int, sigma2: float, generator) -> float:
    """One Adam step on ``batch`` fresh tasks; returns the training MSE."""
    inputs, targets = sample_tasks(batch, length, dim, sigma2, generator)
    loss = model(inputs_embeds=inputs, labels=targets).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def flatness(steps: list[int], values: list[float], window: int) -> tuple[float, float]:
    """``(relative change, relative slope)`` of a curve sampled at ``steps``: the change is ``(mean of the window
    before - mean of the last window) / mean of the last window`` (positive while it still falls), the slope a
    least-squares line through both windows, relative to their mean, per 1,000 steps. ``nan`` with fewer than
    ``2 * window`` points."""
    if window < 1 or len(values) < 2 * window:
        return math.nan, math.nan
    last, before = values[-window:], values[-2 * window:-window]
    mean_last = sum(last) / window
    change = (sum(before) / window - mean_last) / mean_last
    xs, ys = torch.tensor(steps[-2 * window:], dtype=torch.float64), torch.tensor(values[-2 * window:], dtype=torch.float64)
    xc = xs - xs.mean()
    slope = float((xc * (ys - ys.mean())).sum() / (xc * xc).sum()) if float((xc * xc).sum()) > 0 else 0.0
    return float(change), slope * 1000 / float(ys.mean())


def train_until_flat(
    num_heads: int, max_steps: int = 10000, lr: float = 1e-2, decay: str = "plateau", eval_every: int = 100,
    window: int = 5, tol: float = 5e-3, decays: int = 1, factor: float = 0.1, validation: int = 4096,
    length: int = 40, dim: int = 5, sigma2: float = 0.1, batch: int = 256, seed: int = 0, init_std: float = 0.05,
) -> tuple[RegressionTransformer, dict]:
    """Train the testbed with Adam on fresh tasks until its loss curve is flat, or ``max_steps``.

    Every ``eval_every`` steps the MSE on ``validation`` fixed tasks (float32, drawn once from a seed of their own,
    apart from the training and test draws) is recorded. The curve is *flat* when the mean of its last ``window``
    points differs from the mean of the ``window`` before by less than ``tol`` (relative), both windows at the
    current learning rate. ``decay``: ``"plateau"`` multiplies the learning rate by ``factor`` at each flat point
    (a step decay), ``decays`` times, and stops at the next flat point; ``"cosine"`` anneals it to ``lr * factor **
    decays`` over ``max_steps`` and stops at the first flat point; ``"none"`` keeps it and stops at the first flat
    point. Returns the model and a record: ``losses`` (training MSE per step), ``eval_steps`` / ``eval_mse`` (the
    validation curve), ``lr_steps`` (where the rate was cut), ``steps``, ``converged`` (stopped flat, not by the
    cap), ``relative_change`` and ``slope`` (:func:`flatness` of the last two windows: relative, per 1,000 steps).
    """
    from ..progress import progress_bar

    if decay not in ("plateau", "cosine", "none"):
        raise ValueError(f"decay must be 'plateau', 'cosine' or 'none', not {decay!r}")
    torch.manual_seed(seed)
    model = RegressionTransformer(RegressionConfig(dim=dim, num_attention_heads=num_heads, init_std=init_std))
    generator = torch.Generator().manual_seed(seed + 1)
    held_out = sample_tasks(validation, length, dim, sigma2, torch.Generator().manual_seed(10_000 + seed))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    floor = lr * factor ** decays

    def set_lr(value: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = value

    losses, eval_steps, eval_mse, lr_steps = [], [], [], []
    since, cuts, converged = 0, 0, False  # since: the first validation point at the current learning rate
    bar = progress_bar(max_steps, f"in-context regression, H={num_heads}")
    step = 0
    while step < max_steps:
        if decay == "cosine":
            set_lr(floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * step / max_steps)))
        losses.append(_training_step(model, optimizer, batch, length, dim, sigma2, generator))
        step += 1
        bar.update(1)
        if step % eval_every:
            continue
        model.eval()
        with torch.no_grad():
            eval_mse.append(float((model(inputs_embeds=held_out[0]).predictions - held_out[1]).pow(2).mean()))
        model.train()
        eval_steps.append(step)
        change, _ = flatness(eval_steps[since:], eval_mse[since:], window)
        if math.isnan(change) or abs(change) >= tol:
            continue
        if decay == "plateau" and cuts < decays:
            cuts += 1
            set_lr(lr * factor ** cuts)
            lr_steps.append(step)
            since = len(eval_mse)
            continue
        converged = True
        break
    bar.close()
    window_at = max(since, len(eval_mse) - 2 * window)
    change, slope = flatness(eval_steps[window_at:], eval_mse[window_at:], window)
    record = {"losses": losses, "eval_steps": eval_steps, "eval_mse": eval_mse, "lr_steps": lr_steps, "steps": step,
              "converged": converged, "relative_change": change, "slope": slope,
              "final_lr": optimizer.param_groups[0]["lr"]}
    return model.eval(), record


@torch.no_grad()
def head_roles(model: RegressionTransformer) -> dict[str, torch.Tensor]:
    """Per head: ``omega`` (mean diagonal of the x block of W_K^T W_Q), ``kq_offdiag`` (the rest of that
    block relative to omega I), ``mu`` (the OV entry y -> y), ``ov_leak`` (the largest other OV entry of
    the y row and the y column relative to |mu|)."""
    attention = model.model.layers[0].self_attn
    dim, hd = model.config.dim, attention.head_dim
    omega, offdiag, mu, leak = [], [], [], []
    for h in range(attention.num_heads):
        wq = attention.q_proj.weight[h * hd:(h + 1) * hd]  # (hd, D)
        wk = attention.k_proj.weight[h * hd:(h + 1) * hd]
        kq = wk.T @ wq  # logit = z_k^T (W_k^T W_q) z_q
        block = kq[:dim, :dim]
        w = block.diagonal().mean()
        ov = attention.o_proj.weight[:, h * hd:(h + 1) * hd] @ attention.v_proj.weight[h * hd:(h + 1) * hd]  # (D, D)
        omega.append(w)
        offdiag.append((block - w * torch.eye(dim)).norm() / (w.abs() * math.sqrt(dim)))
        mu.append(ov[-1, -1])
        leak.append(torch.cat([ov[-1, :-1], ov[:-1, -1]]).abs().max() / ov[-1, -1].abs())
    return {"omega": torch.stack(omega), "kq_offdiag": torch.stack(offdiag), "mu": torch.stack(mu), "ov_leak": torch.stack(leak)}


def optimal_head_scales(omega: torch.Tensor, length: int, dim: int = 5, sigma2: float = 0.1) -> torch.Tensor:
    """The paper's closed form for the best OV scales given the KQ scales (large L):
    ``mu* = (omega omega^T + (1 + sigma2) / L * exp(d * omega omega^T))^-1 omega`` (exp elementwise)."""
    omega = omega.double()
    outer = omega[:, None] * omega[None, :]
    return torch.linalg.solve(outer + (1 + sigma2) / length * torch.exp(dim * outer), omega).float()


_CHUNK = 2000  # tasks per forward pass when evaluating: (2000, H, L+1, L+1) attention stays small at L = 160


@torch.no_grad()
def _head_features(model: RegressionTransformer, inputs: torch.Tensor) -> torch.Tensor:
    """(B, H): each head's contribution to the prediction with its OV scale taken out (phi_h)."""
    from headwise.statistics import capturing_head_inputs

    seen = []  # the query's head inputs, chunk by chunk (long contexts would otherwise need gigabytes at once)
    with capturing_head_inputs(model, lambda layer, x: seen.append(x[:, -1])):
        for chunk in inputs.split(_CHUNK):
            model(inputs_embeds=chunk)
    attention = model.model.layers[0].self_attn
    heads = torch.cat(seen).unflatten(-1, (attention.num_heads, attention.head_dim))  # (B, H, hd)
    roles = head_roles(model)
    contribution = torch.stack([
        heads[:, h] @ attention.o_proj.weight[-1, h * attention.head_dim:(h + 1) * attention.head_dim] for h in range(attention.num_heads)
    ], dim=-1)
    return contribution / roles["mu"]


def least_squares_head_scales(model: RegressionTransformer, length: int, samples: int = 20000, sigma2: float = 0.1, seed: int = 0) -> torch.Tensor:
    """The best OV scales for this model's attention patterns at context length ``length``, by least
    squares on sampled tasks (the exact optimum the closed form approximates)."""
    inputs, targets = sample_tasks(samples, length, model.config.dim, sigma2, torch.Generator().manual_seed(seed))
    features = _head_features(model, inputs).double()
    return torch.linalg.lstsq(features, targets.double()[:, None]).solution[:, 0].float()


@torch.no_grad()
def evaluate_mse(model, length: int = 40, samples: int = 20000, dim: int = 5, sigma2: float = 0.1, seed: int = 123) -> float:
    """Test MSE on fresh tasks (a wrapped model works too)."""
    inputs, targets = sample_tasks(samples, length, dim, sigma2, torch.Generator().manual_seed(seed))
    squared = sum(float((model(inputs_embeds=x).predictions - y).double().pow(2).sum())
                  for x, y in zip(inputs.split(_CHUNK), targets.split(_CHUNK)))
    return squared / samples


def one_step_gd_mse(length: int = 40, samples: int = 20000, dim: int = 5, sigma2: float = 0.1, seed: int = 123) -> float:
    """MSE of the best-scaled one-step gradient descent predictor ``c * x_q^T sum_i x_i y_i`` (c fitted)."""
    inputs, targets = sample_tasks(samples, length, dim, sigma2, torch.Generator().manual_seed(seed))
    x, y, xq = inputs[:, :-1, :-1], inputs[:, :-1, -1], inputs[:, -1, :-1]
    raw = ((x * y[..., None]).sum(1) * xq).sum(-1).double()
    scale = (raw * targets.double()).sum() / (raw * raw).sum()
    return float((scale * raw - targets.double()).pow(2).mean())


def ridge_mse(length: int = 40, samples: int = 20000, dim: int = 5, sigma2: float = 0.1, seed: int = 123) -> float:
    """MSE of the Bayes-optimal predictor (ridge with lambda = sigma2 * d, the posterior mean)."""
    inputs, targets = sample_tasks(samples, length, dim, sigma2, torch.Generator().manual_seed(seed))
    x, y, xq = inputs[:, :-1, :-1].double(), inputs[:, :-1, -1].double(), inputs[:, -1, :-1].double()
    gram = x.transpose(1, 2) @ x + sigma2 * dim * torch.eye(dim, dtype=torch.float64)
    beta = torch.linalg.solve(gram, (x.transpose(1, 2) @ y[..., None]))[..., 0]
    return float(((beta * xq).sum(-1) - targets.double()).pow(2).mean())


def fit_gate_scales(model: RegressionTransformer, length: int, steps: int = 200, lr: float = 0.05, batch: int = 512,
                    sigma2: float = 0.1, seed: int = 99) -> torch.Tensor:
    """(H,) scales ``a_h`` of a trainable head gate on every head (``interventions.HeadGateConfig``), fitted
    on tasks of context length ``length``; ``a_h * mu_h`` is then the head's new OV scale. The model is
    given back unchanged."""
    import headwise
    import interventions

    gated = headwise.wrap(model, interventions.HeadGateConfig(heads="all", scale=1.0, trainable=True))
    try:
        optimizer = torch.optim.Adam([p for p in gated.parameters() if p.requires_grad], lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            inputs, targets = sample_tasks(batch, length, model.config.dim, sigma2, generator)
            loss = gated(inputs_embeds=inputs, labels=targets).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return interventions.gate_scales(gated)[0]
    finally:
        gated.unload()


def add_testbed_arguments(parser, batch_size: int, what: str) -> None:
    """The model flags of the benchmarks and examples, for a script that trains its own small model (``what``):
    ``--batch-size`` is its training batch; it runs on the CPU in float32; ``--model`` and
    ``--attn-implementation`` do not apply (``check_testbed_arguments`` refuses them)."""
    group = parser.add_argument_group(f"model (this script trains {what}: only --batch-size changes anything)")
    group.add_argument("--model", help="does not apply (an error if given)")
    group.add_argument("--device", default="cpu", choices=["cpu"], help="cpu only: the testbed is far too small for a GPU")
    group.add_argument("--dtype", default="float32", choices=["float32"], help="float32 only")
    group.add_argument("--attn-implementation", help="does not apply (an error if given)")
    group.add_argument("--batch-size", type=int, default=batch_size, help="tasks per training step")


def check_testbed_arguments(parser, args, what: str) -> None:
    """Refuse ``--model`` and ``--attn-implementation`` where the script trains its own model."""
    for flag in ("model", "attn_implementation"):
        if getattr(args, flag) is not None:
            parser.error(f"--{flag.replace('_', '-')} does not apply: this script trains {what}")
