"""Every method on the regression testbed, a model headwise has never seen: it attaches through the generic
site lookup, trains where the method trains, and saves / reloads to the same predictions."""

import pytest
import torch

import headwise
import interventions as iv
from headwise.experiments import regression as R
from headwise.progress import disable_progress_bars
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig, inject
from zerotuning import ZeroTuningConfig


@pytest.fixture(scope="module", params=[0, 1, 2], ids=lambda seed: f"seed{seed}")
def base(request):
    disable_progress_bars()
    model, _ = R.train_regression(1, steps=300, lr=1e-2, seed=request.param)
    return model


def fresh(base):
    model = R.RegressionTransformer(base.config)
    model.load_state_dict(base.state_dict())
    return model.eval()


def train(model, steps=60, length=10):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    generator = torch.Generator().manual_seed(5)
    for _ in range(steps):
        inputs, targets = R.sample_tasks(256, length, generator=generator)
        loss = model(inputs_embeds=inputs, labels=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("make, learns", [
    (lambda m: headwise.wrap(m, LofitConfig(heads="all", use_scale=True)), True),
    (lambda m: headwise.wrap(m, iv.HeadGateConfig(heads="all", scale=1.0, trainable=True)), True),
    # the first key is one more context pair here, not an attention sink: ln gamma has nothing to fix
    (lambda m: headwise.wrap(m, ZeroTuningConfig(heads="all", gamma=1.0)), False),
], ids=["lofit", "head_gate", "zerotuning"])
def test_each_trainable_method_trains_on_a_context_shift_and_round_trips(base, make, learns, tmp_path):
    model = make(fresh(base))
    before = R.evaluate_mse(model, length=10, samples=4000)
    train(model)
    after = R.evaluate_mse(model, length=10, samples=4000)
    assert after < before - 0.01 if learns else after < before + 0.01
    model.save_pretrained(tmp_path)
    reloaded = headwise.from_pretrained(fresh(base), str(tmp_path))
    inputs, _ = R.sample_tasks(64, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(inputs_embeds=inputs).predictions, model(inputs_embeds=inputs).predictions)


def test_soft_injection_injects_at_the_last_token_that_attends_to_itself(base):
    """Soft injection finds the last prompt token as the last token attending to itself; the testbed's query
    attends only to the context, so the injection lands on the last context pair (and the query sees it)."""
    model = fresh(base)
    inputs, _ = R.sample_tasks(8, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        bare = model(inputs_embeds=inputs).logits
        injected = inject(model, torch.randn(1, 1, 6), SoftInjectionConfig(heads="all"))(inputs_embeds=inputs).logits
    assert torch.allclose(injected[:, :-2], bare[:, :-2], atol=1e-6)
    assert (injected[:, -2] - bare[:, -2]).abs().max() > 1e-3
