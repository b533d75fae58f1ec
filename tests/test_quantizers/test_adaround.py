"""AdaRound weight quantizer: rounding modes, initialisation, regulariser, straight-through gradients."""
from __future__ import annotations

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import AdaRoundQuantizer, QuantizerError, UniformQuantizer, beta_schedule

ZETA, GAMMA = 1.1, -0.1


def h_ref(v: torch.Tensor) -> torch.Tensor:
    """The rectified sigmoid, written out."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def test_nearest_mode_equals_the_uniform_quantizer():
    w = make_input('weight')
    ada = calibrate(AdaRoundQuantizer(4), w)
    uni = calibrate(UniformQuantizer(4, dict(type='per_channel', axis=0)), w)
    assert ada.mode == 'nearest'
    assert torch.equal(ada(w), uni(w))
    assert ada.scale.shape == (16, 1)


def test_initial_soft_rounding_reproduces_the_weight():
    w = make_input('weight')
    q = calibrate(AdaRoundQuantizer(4), w)
    rest = w / q.scale - torch.floor(w / q.scale)
    assert torch.allclose(h_ref(q.alpha), rest.clamp(1e-6, 1 - 1e-6), atol=1e-5)
    q.set_mode('soft')
    inside = (w / q.scale + q.zero_point >= 0) & (w / q.scale + q.zero_point <= 15)  # not clipped by the range
    assert bool(inside.float().mean() > 0.8)
    assert torch.allclose(q(w)[inside], w[inside], atol=1e-5)


@pytest.mark.parametrize('mode', ['soft', 'hard'])
def test_modes_match_the_formula(mode):
    w = make_input('weight')
    q = calibrate(AdaRoundQuantizer(3), w)
    with torch.no_grad():
        q.alpha.normal_(generator=torch.Generator().manual_seed(1))
    q.set_mode(mode)
    h = h_ref(q.alpha)
    h = (h >= 0.5).float() if mode == 'hard' else h
    ref = (torch.clamp(torch.floor(w / q.scale) + h + q.zero_point, 0, 7) - q.zero_point) * q.scale
    assert torch.allclose(q(w), ref, rtol=1e-6, atol=1e-7)


def test_hard_rounding_from_the_initial_state_is_nearest_rounding():
    w = make_input('weight')
    q = calibrate(AdaRoundQuantizer(4), w)
    nearest = q(w)
    q.set_mode('hard')
    assert torch.equal(q(w), nearest)


def test_gradients_reach_the_rounding_variables_and_the_weight():
    w = make_input('weight').requires_grad_(True)
    q = calibrate(AdaRoundQuantizer(4), w.detach())
    q.set_mode('soft')
    loss = q(w).square().sum() + 0.01 * q.regularization(beta=20.0)
    loss.backward()
    assert q.alpha.grad is not None and bool((q.alpha.grad != 0).any())
    assert w.grad is not None and bool((w.grad != 0).any())  # straight-through floor


def test_a_few_optimiser_steps_change_the_hard_rounding():
    w = make_input('weight')
    target = make_input('weight', seed=1) * 0.01 + w
    q = calibrate(AdaRoundQuantizer(3), w)
    q.set_mode('soft')
    opt = torch.optim.Adam([q.alpha], lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        ((q(w) - target).square().sum() + 1e-4 * q.regularization(10.0)).backward()
        opt.step()
    q.set_mode('hard')
    hard = q(w)
    q.set_mode('nearest')
    assert not torch.equal(hard, q(w))


def test_regularization_formula():
    q = calibrate(AdaRoundQuantizer(4), make_input('weight'))
    for beta in (2.0, 20.0):
        ref = (1 - (2 * h_ref(q.alpha) - 1).abs().pow(beta)).sum()
        assert float(q.regularization(beta)) == pytest.approx(float(ref), rel=1e-6)


def test_beta_schedule():
    assert beta_schedule(0, 100) == 20.0 and beta_schedule(19, 100) == 20.0
    assert beta_schedule(20, 100) == 20.0
    assert beta_schedule(60, 100) == pytest.approx(11.0)
    assert beta_schedule(100, 100) == pytest.approx(2.0)
    with pytest.raises(QuantizerError, match='warmup'):
        beta_schedule(0, 100, warmup=1.5)


def test_shape_mismatch_and_invalid_settings_raise():
    q = calibrate(AdaRoundQuantizer(4), make_input('weight'))
    q.set_mode('soft')
    with pytest.raises(QuantizerError, match='shape'):
        q(torch.zeros(16, 6))
    with pytest.raises(QuantizerError, match='mode'):
        q.set_mode('stochastic')
    with pytest.raises(QuantizerError, match='per_token'):
        AdaRoundQuantizer(4, granularity='per_token')
    with pytest.raises(QuantizerError, match='zeta'):
        AdaRoundQuantizer(4, zeta=0.9)
