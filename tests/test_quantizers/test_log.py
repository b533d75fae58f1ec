"""log2 and log√2 (RepQ-ViT) quantizers against plain reference formulas."""
from __future__ import annotations

import math

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import Log2Quantizer, LogSqrt2Quantizer, QuantizerError
from quant_hooks.quantizers.functional import round_log2_float32_


def ref_log_quant(x: torch.Tensor, scale, bits: int, k: int, underflow: str = 'zero',
                  rounding: str = 'log') -> torch.Tensor:
    """The formula, value by value: q = clamp(round(-k·log2(x/Δ)), 0, 2^b - 1), x̂ = Δ·2^(-q/k); codes beyond
    the range give 0 ('zero') or the last level ('clamp'); x <= 0 has log2 = -inf."""
    qmax = 2**bits - 1
    scale = torch.broadcast_to(torch.as_tensor(scale, dtype=torch.float32), x.shape)
    ratio = (x.clamp_min(0) / scale).flatten().tolist()  # x/Δ rounded to float32 as the quantizer computes it
    out = []
    for v, s in zip(ratio, scale.flatten().tolist()):
        if v <= 0:
            q = math.inf
        elif rounding == 'log':
            q = round(-k * math.log2(v))
        else:  # FQ-ViT's log_round of Δ/x
            r = 1.0 / v
            f = math.floor(math.log2(r))
            q = f + (1 if r - 2.0**f >= 2.0**(f - 1) else 0)
        if q > qmax and underflow == 'zero':
            out.append(0.0)
            continue
        q = min(max(q, 0), qmax)
        out.append(s * 2.0**(-q / k))
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def assert_close_levels(out, ref):
    """Equal to the float64 reference; a value lying within float32 rounding of a level boundary may take the
    neighbouring level (allowed for at most 0.1% of the values)."""
    bad = ~torch.isclose(out.double(), ref, rtol=1e-6, atol=1e-30)
    assert float(bad.double().mean()) <= 1e-3, f'{int(bad.sum())} of {bad.numel()} values differ'


@pytest.mark.parametrize('underflow', ['zero', 'clamp'])
@pytest.mark.parametrize('bits', [2, 3, 4, 6, 7, 8])
@pytest.mark.parametrize('cls, k', [(Log2Quantizer, 1), (LogSqrt2Quantizer, 2)])
@pytest.mark.parametrize('kind', ['softmax', 'heavy'])
def test_matches_reference(kind, cls, k, bits, underflow):
    x = make_input(kind, shape=(2, 3, 8, 16))
    x = x.abs() if kind == 'heavy' else x
    q = calibrate(cls(bits, range_method='minmax', underflow=underflow), x)
    assert float(q.scale) == float(x.max())
    assert_close_levels(q(x), ref_log_quant(x, q.scale, bits, k, underflow))


def test_linear_rounding_matches_reference():
    x = make_input('softmax', shape=(2, 3, 8, 16))
    q = Log2Quantizer(4, range_method='fixed', scale=1.0, rounding='linear')
    assert not q.requires_calibration
    assert_close_levels(q(x), ref_log_quant(x, 1.0, 4, 1, rounding='linear'))
    # the two roundings differ where Δ/x lies between √2·2^f and 1.5·2^f: Δ/x = 1.45 rounds to 1 linearly but
    # to 2 in the log domain (log2 1.45 = 0.536)
    v = torch.tensor([1 / 1.45])
    assert float(q(v)) == 1.0 and float(Log2Quantizer(4, range_method='fixed', scale=1.0)(v)) == 0.5


def test_repq_bit_shift_form_equals_the_sqrt2_power():
    q = torch.arange(0, 256, dtype=torch.float32)
    scale = 0.37
    shift_form = 2.0**(-torch.ceil(q / 2)) * (1 + (math.sqrt(2) - 1) * (q % 2)) * scale
    x = LogSqrt2Quantizer(8, range_method='fixed', scale=scale)(scale * 2.0**(-q / 2))
    assert torch.allclose(x, shift_form, rtol=1e-6, atol=0)


def test_percentile_search_matches_reference():
    x = make_input('softmax', shape=(4, 3, 16, 16))
    pcts = (0.9, 0.99, 0.999, 1.0)
    q = calibrate(LogSqrt2Quantizer(4, percentiles=pcts), x)
    best = None
    for p in pcts:  # reference: torch.quantile of the whole tensor, L2 error with the reference formula
        cand = torch.quantile(x.flatten().double(), p).float()
        err = float((ref_log_quant(x, cand, 4, 2) - x.double()).square().sum())
        if best is None or err < best[0]:
            best = (err, cand)
    assert float(q.scale) == pytest.approx(float(best[1]), rel=1e-6)


def test_per_head_scales():
    x = make_input('softmax', shape=(2, 3, 8, 8))
    x[:, 1] *= 0.25  # one head with smaller probabilities
    q = calibrate(Log2Quantizer(4, granularity='per_head', range_method='minmax'), x)
    assert q.scale.shape == (3, 1, 1)
    assert torch.allclose(q.scale.flatten(), x.amax(dim=(0, 2, 3)))
    assert_close_levels(q(x), ref_log_quant(x, q.scale, 4, 1))


def test_non_positive_values_map_to_zero():
    q = Log2Quantizer(4, range_method='fixed', scale=1.0)
    out = q(torch.tensor([0.0, -0.0, -0.3, 1e-30, 0.5]))
    assert out.tolist() == [0.0, 0.0, 0.0, 0.0, 0.5]


@pytest.mark.parametrize('cls, k', [(Log2Quantizer, 1), (LogSqrt2Quantizer, 2)])
def test_16_bits_only_keeps_the_relative_rounding_error(cls, k):
    x = make_input('softmax', shape=(2, 3, 8, 16))
    q = calibrate(cls(16, range_method='minmax'), x)
    keep = x > 1e-30  # softmax underflows to exact zeros, which stay 0
    out, x = q(x)[keep], x[keep]
    assert bool((out > 0).all()), 'nothing is flushed at 16 bits'
    ratio = out.double() / x.double()
    bound = 2.0**(0.5 / k)  # rounding in the log domain moves a value by at most half a level
    assert float(ratio.max()) <= bound * (1 + 1e-6) and float(ratio.min()) >= 1 / bound * (1 - 1e-6)


@pytest.mark.parametrize('k', [1, 2])
def test_bitwise_log2_rounding_is_exact(k):
    gen = torch.Generator().manual_seed(0)
    v = torch.cat([torch.rand(200_000, generator=gen) * 4, torch.exp(torch.randn(200_000, generator=gen) * 20)])
    for t in (2**0.25, 2**0.5, 2**0.75):  # the floats right around every rounding threshold, in several binades
        f = torch.tensor(t, dtype=torch.float32)
        around = torch.stack([torch.nextafter(f, torch.tensor(0.0)), f, torch.nextafter(f, torch.tensor(2.0))])
        v = torch.cat([v, around, around * 2.0**-20, around * 2.0**30])
    v = v[(v > 1.2e-38) & torch.isfinite(v)]
    got = round_log2_float32_(v.clone(), k)
    ref = torch.tensor([round(k * math.log2(a)) for a in v.tolist()], dtype=torch.float32)
    assert torch.equal(got, ref)


def test_bitwise_log2_rounding_underflows_zero_and_negative_values():
    for k in (1, 2):
        got = round_log2_float32_(torch.tensor([0.0, -0.0, -2.0, 1e-40]), k)
        assert bool((got <= -126 * k).all())


@pytest.mark.parametrize('kwargs, field', [
    (dict(rounding='linear'), 'rounding'),
    (dict(range_method='fixed'), 'scale'),
    (dict(range_method='fixed', scale=-1.0), 'scale'),
    (dict(scale=1.0), 'scale'),
    (dict(underflow='wrap'), 'underflow'),
    (dict(granularity='per_token'), 'granularity'),
    (dict(percentiles=(0.2, )), 'percentiles'),
    (dict(range_method='mse'), 'range_method'),
])
def test_invalid_settings_raise(kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        LogSqrt2Quantizer(4, **kwargs)


@pytest.mark.parametrize('block', [1000, 1 << 18])
@pytest.mark.parametrize('flush', [False, True])
@pytest.mark.parametrize('bits', [2, 3, 4, 6, 8])
@pytest.mark.parametrize('k', [1, 2])
def test_per_tensor_table_path_equals_the_element_wise_path(k, bits, flush, block, monkeypatch):
    """One scale: the result is read from a table, block by block; the same scale repeated per row takes the
    element-wise path. Both must agree bit for bit, offsets, zeros, -0.0, subnormals, negatives and huge values
    included, with one block or several (the last one partial)."""
    from quant_hooks.quantizers import functional
    from quant_hooks.quantizers.functional import log_fake_quant
    monkeypatch.setattr(functional, 'LOG_BLOCK', block)
    gen = torch.Generator().manual_seed(bits)
    x = torch.cat([torch.rand(4000, generator=gen), torch.exp(torch.randn(4000, generator=gen) * 8),
                   torch.tensor([0.0, -0.0, -1.5, 1e-40, 3e38, 1.0, 0.5, 2**-0.25])]).reshape(8, -1)
    scale = torch.tensor(0.37)
    per_row = scale.expand(x.shape[0], 1).contiguous()
    for offset in (None, torch.tensor(-0.17), 0.25):
        got = log_fake_quant(x, scale, bits, k, flush, offset=offset)
        ref = log_fake_quant(x, per_row, bits, k, flush, offset=offset)
        assert torch.equal(got, ref)
        scratch = x.clamp_min(0)
        assert torch.equal(log_fake_quant(scratch, scale, bits, k, flush, inplace=True, offset=offset), ref)


def test_squared_float32_rounds_base_sqrt2_like_two_comparisons():
    """round(log2(fl(t·t))) equals round(2·log2 t) for every float32 mantissa (the exponent only scales t² by a
    power of four), which the per-tensor base-√2 lookup relies on."""
    from quant_hooks.quantizers.functional import round_log2_index_
    t = (torch.arange(1 << 23, dtype=torch.int32) | (127 << 23)).view(torch.float32)
    two = round_log2_index_(t.clone(), 2) - 254
    squared = round_log2_index_(t * t, 1) - 127
    assert torch.equal(two, squared)
    assert torch.equal(two.double(), torch.round(2 * torch.log2(t.double())))
