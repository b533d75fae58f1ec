"""Q-HyViT helpers: scheme / granularity chosen by calibration loss, zero-point overflow handling."""
from __future__ import annotations

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import (HybridQuantizer, QuantizerError, resolve_zero_point_overflow,
                                    zero_point_overflow)


def ref_quant(v: float, lo: float, hi: float, bits: int, symmetric: bool, overflow: str = 'none') -> float:
    """Uniform quantization of one value with the overflow policies written out."""
    qmax = 2**bits - 1
    scale = max((hi - lo) / qmax, 1e-8)
    z = round(-lo / scale)
    if not symmetric and not 0 <= z <= qmax:
        if overflow == 'clamp_range':
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            scale = max((hi - lo) / qmax, 1e-8)
            z = round(-lo / scale)
        elif overflow == 'symmetric':
            symmetric = True
    if symmetric:
        s = max(max(abs(lo), abs(hi)) / (2**(bits - 1) - 1), 1e-8)
        return min(max(round(v / s), -2**(bits - 1)), 2**(bits - 1) - 1) * s
    return (min(max(round(v / scale) + z, 0), qmax) - z) * scale


def ref_candidates(x: torch.Tensor, bits: int, overflow: str):
    """MSE of every (granularity, scheme) candidate with min/max ranges; x is [tokens, channels]."""
    losses = {}
    for gran in ('per_tensor', 'per_channel'):
        for scheme in ('asymmetric', 'symmetric'):
            out = torch.empty_like(x, dtype=torch.float64)
            for c in range(x.shape[1]):
                col = x[:, c] if gran == 'per_channel' else x
                lo, hi = float(col.min()), float(col.max())
                out[:, c] = torch.tensor([ref_quant(v, lo, hi, bits, scheme == 'symmetric', overflow)
                                          for v in x[:, c].tolist()], dtype=torch.float64)
            losses[f'{gran}/{scheme}'] = (float((out - x.double()).square().mean()), out)
    return losses


@pytest.mark.parametrize('overflow', ['clamp_range', 'symmetric', 'none'])
@pytest.mark.parametrize('data', ['ln', 'skewed'])
def test_choice_is_the_lowest_calibration_loss_and_output_matches(data, overflow):
    x = make_input('ln', shape=(64, 12))
    if data == 'skewed':
        x = x.abs() + torch.linspace(0.5, 6.0, 12)  # all-positive channels: their asymmetric zero-point overflows
    q = calibrate(HybridQuantizer(4, overflow=overflow), x)
    ref = ref_candidates(x, 4, overflow)
    best = min(ref, key=lambda k: ref[k][0])
    choice = q.choice
    assert f"{choice['granularity']}/{choice['scheme']}" == best
    for name, loss in choice['losses'].items():
        assert loss == pytest.approx(ref[name][0], rel=1e-4)
    assert torch.allclose(q(x).double(), ref[best][1], rtol=1e-5, atol=1e-5)


def test_channel_wise_wins_when_channel_ranges_differ_and_layer_wise_when_they_do_not():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=gen) * torch.logspace(-2, 1, 16)
    assert calibrate(HybridQuantizer(4), x).choice['granularity'] == 'per_channel'
    same = torch.randn(256, 16, generator=gen)
    same[0], same[1] = 4.0, -4.0  # every channel has the same range: channel-wise gains nothing, layer-wise wins ties
    assert calibrate(HybridQuantizer(4), same).choice['granularity'] == 'per_tensor'


def test_conv_layout_uses_channel_axis_one():
    x = make_input('heavy', shape=(2, 6, 5, 5)) * torch.logspace(-2, 1, 6)[:, None, None]
    q = calibrate(HybridQuantizer(4, channel_axis=1), x)
    assert q.choice['granularity'] == 'per_channel' and q.scale.shape == (6, 1, 1)


def test_zero_point_overflow_detection_and_policies():
    lo = torch.tensor([-1.0, 0.5, -3.0, 0.01])
    hi = torch.tensor([1.3, 2.0, -1.0, 1.0])
    over = zero_point_overflow(lo, hi, 4)
    assert over.tolist() == [False, True, True, False]  # z = 7, -5, 22, 0
    scale, zp, qmin, qmax, flagged = resolve_zero_point_overflow(lo, hi, 4, 'clamp_range')
    assert torch.equal(flagged, over)
    assert bool(((zp >= 0) & (zp <= 15)).all())
    assert torch.allclose(scale, torch.tensor([2.3 / 15, 2 / 15, 3 / 15, 0.99 / 15]))
    scale, zp, qmin, qmax, _ = resolve_zero_point_overflow(lo, hi, 4, 'symmetric')
    assert zp.tolist() == [7.0, 0.0, 0.0, 0.0]
    assert qmin.tolist() == [0.0, -8.0, -8.0, 0.0] and qmax.tolist() == [15.0, 7.0, 7.0, 15.0]
    assert torch.allclose(scale[1:3], torch.tensor([2 / 7, 3 / 7]))
    _, zp, _, _, _ = resolve_zero_point_overflow(lo, hi, 4, 'none')
    assert zp.tolist() == [7.0, -5.0, 22.0, 0.0]


def test_per_group_symmetric_fallback_quantizes_with_signed_codes():
    x = torch.stack([torch.linspace(-1, 1.3, 50), torch.linspace(2, 5, 50)], dim=1)  # channel 1 overflows
    q = calibrate(HybridQuantizer(4, granularities=('per_channel', ), schemes=('asymmetric', ),
                                  overflow='symmetric'), x)
    assert q.qmin.tolist() == [0.0, -8.0] and int(q.overflowed) == 1
    codes = q.quantize(x)
    assert int(codes[:, 1].min()) >= 0 and int(codes[:, 1].max()) <= 7
    ref = torch.tensor([[ref_quant(float(v), float(x[:, c].min()), float(x[:, c].max()), 4, False, 'symmetric')
                         for c, v in enumerate(row)] for row in x], dtype=torch.float64)
    assert torch.allclose(q(x).double(), ref, rtol=1e-5, atol=1e-6)


def test_state_dict_restores_the_choice():
    x = make_input('heavy', shape=(64, 8)) * torch.logspace(-2, 1, 8)
    q = calibrate(HybridQuantizer(4), x)
    fresh = HybridQuantizer(4)
    fresh.load_state_dict(q.state_dict())
    assert fresh.choice == q.choice and fresh.granularity == q.granularity
    assert torch.equal(fresh(x), q(x))


def test_mse_range_search_is_never_worse_than_minmax():
    x = make_input('heavy', shape=(128, 8))
    mm = calibrate(HybridQuantizer(4), x)
    mse = calibrate(HybridQuantizer(4, range_method='mse'), x)
    assert min(mse.choice['losses'].values()) <= min(mm.choice['losses'].values()) + 1e-12


@pytest.mark.parametrize('kwargs, field', [
    (dict(schemes=('signed', )), 'schemes'),
    (dict(granularities=('per_token', )), 'granularities'),
    (dict(schemes=()), 'schemes'),
    (dict(overflow='wrap'), 'overflow'),
    (dict(loss='kl'), 'loss'),
    (dict(range_method='percentile'), 'range_method'),
    (dict(search_steps=0), 'search_steps'),
])
def test_invalid_settings_raise(kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        HybridQuantizer(4, **kwargs)
