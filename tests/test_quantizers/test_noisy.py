"""NoisyQuant: the fixed noisy bias, its removal folded into the next layer's bias, and the noise search."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from qtest_utils import _student_t, calibrate, make_input
from torch import nn

from quant_hooks.nn import QuantAct, QuantConv2d, QuantLinear, QuantMatMul
from quant_hooks.quantizers import NoisyQuantizer, QuantizerError, UniformQuantizer, search_noise, weight_times_noise

INNER = dict(type='uniform', bits=4)


def noisy(seed=0, **kwargs):
    return NoisyQuantizer(dict(INNER), seed=seed, **kwargs)


def test_noise_is_uniform_within_half_a_step_and_stored():
    x = make_input('ln', shape=(2, 9, 64))
    q = calibrate(noisy(), x)
    step = float(q.quantizer.scale)
    assert q.noise.shape == (64, ) and torch.allclose(q.step, torch.full((64, ), step))
    assert float(q.noise.abs().max()) <= step / 2
    assert torch.allclose(q.noise, step * q.noise_unit)
    assert 'noise' in q.state_dict() and 'noise_unit' in q.state_dict()


def test_standalone_output_is_q_of_x_plus_n_minus_n():
    x = make_input('ln')
    q = calibrate(noisy(), x)
    n = q.noise
    assert not q.bias_folded
    assert torch.equal(q(x), q.quantizer(x + n) - n)


@pytest.mark.parametrize('kind', ['ln', 'heavy'])
def test_output_matches_the_plain_formula(kind):
    x = make_input(kind)
    q = calibrate(noisy(seed=2), x)
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 15
    z = round(-lo / scale)
    n = q.noise.tolist()
    ref = [[[(min(max(round((v + n[c]) / scale) + z, 0), 15) - z) * scale - n[c] for c, v in enumerate(row)]
            for row in mat] for mat in x.tolist()]
    close = torch.isclose(q(x).double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert float((~close).double().mean()) <= 2e-3


def test_seeded_runs_repeat_exactly_and_seeds_differ():
    x = make_input('ln')
    a, b, c = (calibrate(noisy(seed), x) for seed in (3, 3, 4))
    assert torch.equal(a.noise, b.noise) and torch.equal(a(x), b(x))
    assert not torch.equal(a.noise, c.noise)


def test_folded_bias_identity_in_a_linear_layer():
    torch.manual_seed(0)
    lin = nn.Linear(24, 10)
    x = make_input('ln')
    layer = QuantLinear.from_float(lin, 'fc', noisy(), dict(type='uniform', bits=4, granularity='per_channel'))
    calibrate(layer.input_quantizer, x)
    calibrate(layer.weight_quantizer, lin.weight)
    q = layer.input_quantizer
    assert q.bias_folded
    w = layer.quant_weight()
    n = q.noise
    folded = F.linear(q.quantizer(x + n), w, lin.bias - w @ n)  # W·Q(x+N) + (b − W·N)
    unfolded = F.linear(q.quantizer(x + n) - n, w, lin.bias)  # W·(Q(x+N) − N) + b
    assert torch.equal(layer(x), folded)
    assert torch.allclose(folded, unfolded, rtol=1e-5, atol=1e-5)
    assert torch.allclose(layer(x), F.linear(q.fake_quant_unfolded(x), w, lin.bias), rtol=1e-5, atol=1e-5)


def test_folding_works_without_a_bias():
    lin = nn.Linear(24, 10, bias=False)
    x = make_input('ln')
    layer = QuantLinear.from_float(lin, 'fc', noisy())
    calibrate(layer.input_quantizer, x)
    q = layer.input_quantizer
    assert torch.allclose(layer(x), F.linear(q.quantizer(x + q.noise) - q.noise, lin.weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('padding, padding_mode, folds', [(0, 'zeros', True), (1, 'replicate', True),
                                                          (1, 'zeros', False)])
def test_conv_folds_exactly_when_padding_carries_the_noise(padding, padding_mode, folds):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=padding, padding_mode=padding_mode, groups=2)
    x = make_input('heavy', shape=(2, 8, 7, 7))
    layer = QuantConv2d.from_float(conv, 'conv', noisy(channel_axis=1))
    q = layer.input_quantizer
    calibrate(q, x)
    assert q.bias_folded == folds
    reference = conv(q.quantizer(x + q.noise[:, None, None]) - q.noise[:, None, None])  # W·(Q(x+N) − N) + b
    assert torch.allclose(layer(x), reference, rtol=1e-5, atol=1e-5)


def test_weight_times_noise_matches_a_loop_for_grouped_convs():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=gen)  # groups=2: out 6, in 8
    n = torch.randn(8, generator=gen)
    got = weight_times_noise(w, n, groups=2)
    for o in range(6):
        g = o // 3
        ref = sum(float(w[o, i].sum()) * float(n[g * 4 + i]) for i in range(4))
        assert float(got[o]) == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_matmul_operands_and_standalone_activations_are_not_folded():
    x = make_input('ln')
    mm = QuantMatMul('qk', noisy(), None)
    act = QuantAct('act', noisy())
    for q in (mm.a_quantizer, act.quantizer):
        calibrate(q, x)
        assert not q.bias_folded
    assert torch.equal(act(x), act.quantizer.quantizer(x + act.quantizer.noise) - act.quantizer.noise)


def _heavy_layer_data(seed: int, n: int = 512, c: int = 64):
    """Post-LN-like rows: per-channel offsets, a small spread and Student-t tails (the tails set the range)."""
    gen = torch.Generator().manual_seed(seed)
    beta = torch.randn(c, generator=torch.Generator().manual_seed(99)) * 0.5
    return beta + 0.05 * torch.randn(n, c, generator=gen) + 0.02 * _student_t((n, c), gen)


def test_search_lowers_layer_error_on_heavy_tailed_inputs_against_the_plain_quantizer():
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(32, 64, generator=gen) / 8, torch.randn(32, generator=gen)
    layer = lambda x: F.linear(x, w, b)  # noqa: E731
    calib_x, test_x = _heavy_layer_data(10), _heavy_layer_data(100)
    plain = calibrate(UniformQuantizer(4), calib_x)
    q = calibrate(noisy(seed=0), calib_x)
    result = search_noise(q, [calib_x[:256], calib_x[256:]], layer)
    assert result['mse'] < result['plain_mse']
    assert float(q.noise_range) == result['noise_range'] and float(q.noise_mean) == result['noise_mean']
    # held-out data from the same layer: the searched noise still beats the plain quantizer
    err_plain = float((layer(plain(test_x)) - layer(test_x)).square().mean())
    err_noisy = float((layer(q(test_x)) - layer(test_x)).square().mean())
    assert err_noisy < 0.9 * err_plain


def test_search_state_survives_a_state_dict_round_trip():
    x = _heavy_layer_data(1, n=64)
    q = calibrate(noisy(seed=5), x)
    search_noise(q, x, lambda t: t.sum(-1, keepdim=True), ranges=[0.0, 0.5, 1.5], means=[-0.25, 0.0, 0.25],
                 mode='grid')
    fresh = noisy(seed=5)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh(x), q(x))
    assert float(fresh.noise_range) == float(q.noise_range)


@pytest.mark.parametrize('kwargs, field', [
    (dict(noise_range=-1.0), 'noise_range'),
    (dict(noise_mean=float('nan')), 'noise_mean'),
    (dict(seed=True), 'seed'),
    (dict(step=-0.5), 'step'),
    (dict(quantizer=dict(type='nope')), 'nope'),
])
def test_invalid_settings_raise(kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        NoisyQuantizer(**{'quantizer': dict(INNER), **kwargs})


def test_misuse_raises_clear_errors():
    q = noisy()
    with pytest.raises(QuantizerError, match='calibrated'):
        q.set_noise(1.0, 0.0)
    calibrate(q, make_input('ln'))
    with pytest.raises(QuantizerError, match='24'):
        q(make_input('ln', shape=(2, 9, 16)))
    with pytest.raises(QuantizerError, match='mode'):
        search_noise(q, make_input('ln'), lambda t: t, mode='random')
    with pytest.raises(QuantizerError, match='at least one'):
        search_noise(q, [], lambda t: t)
