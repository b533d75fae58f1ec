"""Uniform affine / symmetric quantizer against plain reference formulas, and the range estimators."""
from __future__ import annotations

import math

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import QuantizerError, UniformQuantizer
from quant_hooks.quantizers.functional import group_quantile, group_quantiles, strided_columns


def ref_affine(x: float, lo: float, hi: float, bits: int, symmetric: bool) -> float:
    """The spec's formula for one value, in plain Python (float64)."""
    if symmetric:
        scale = max(max(abs(lo), abs(hi)) / (2**(bits - 1) - 1), 1e-8)
        q = min(max(round(x / scale), -2**(bits - 1)), 2**(bits - 1) - 1)
        return q * scale
    scale = max((hi - lo) / (2**bits - 1), 1e-8)
    z = round(-lo / scale)
    q = min(max(round(x / scale) + z, 0), 2**bits - 1)
    return (q - z) * scale


def ref_tensor(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Apply :func:`ref_affine` element by element with ``lo``/``hi`` broadcast against ``x``."""
    lo, hi = torch.broadcast_to(lo, x.shape), torch.broadcast_to(hi, x.shape)
    out = [ref_affine(float(a), float(lo_), float(hi_), bits, symmetric)
           for a, lo_, hi_ in zip(x.flatten().tolist(), lo.flatten().tolist(), hi.flatten().tolist())]
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def assert_matches_reference(out, ref, scale):
    """Equal to the float64 reference, allowing a value at an exact rounding tie in float32 to go one step."""
    diff = (out.double() - ref).abs()
    assert float((diff / torch.broadcast_to(scale, out.shape).double()).max()) < 1.0 + 1e-4
    assert float((diff > 1e-5 * (1 + ref.abs())).double().mean()) < 1e-3


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('kind', ['ln', 'heavy'])
@pytest.mark.parametrize('bits', [2, 4, 8])
def test_per_tensor_minmax_matches_reference(bits, kind, symmetric):
    x = make_input(kind)
    q = calibrate(UniformQuantizer(bits, 'per_tensor', symmetric=symmetric), x[:1], x[1:])
    ref = ref_tensor(x, x.min(), x.max(), bits, symmetric)
    assert_matches_reference(q(x), ref, q.scale)


@pytest.mark.parametrize('axis', [0, 1, -1])
def test_per_channel_any_axis_matches_reference(axis):
    x = make_input('heavy')
    q = calibrate(UniformQuantizer(4, dict(type='per_channel', axis=axis)), x)
    a = axis % x.dim()
    dims = [d for d in range(x.dim()) if d != a]
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    assert_matches_reference(q(x), ref_tensor(x, lo, hi, 4, False), q.scale)


def test_per_head_matches_reference():
    p = make_input('softmax', shape=(2, 3, 6, 6))
    q = calibrate(UniformQuantizer(4, 'per_head'), p)
    lo, hi = p.amin(dim=(0, 2, 3), keepdim=True), p.amax(dim=(0, 2, 3), keepdim=True)
    assert_matches_reference(q(p), ref_tensor(p, lo, hi, 4, False), q.scale)


def test_per_token_dynamic_matches_reference_for_any_token_count():
    q = UniformQuantizer(4, 'per_token')
    assert not q.requires_calibration
    for n in (1, 7, 50):
        x = make_input('heavy', shape=(2, n, 16))
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        assert_matches_reference(q(x), ref_tensor(x, lo, hi, 4, False), q.params_for(x)[0])


def test_per_token_static_matches_reference_and_rejects_other_token_counts():
    x = make_input('ln')
    q = calibrate(UniformQuantizer(4, 'per_token_static'), x)
    lo, hi = x.amin(dim=(0, 2), keepdim=True)[0], x.amax(dim=(0, 2), keepdim=True)[0]
    assert_matches_reference(q(x), ref_tensor(x, lo, hi, 4, False), q.scale)
    with pytest.raises(Exception):
        q(make_input('ln', shape=(2, 5, 24)))


def test_per_token_static_needs_a_fixed_token_count_while_calibrating():
    q = UniformQuantizer(4, 'per_token_static')
    q.observing = True
    q(make_input('ln'))
    with pytest.raises(QuantizerError, match='fixed size'):
        q(make_input('ln', shape=(2, 5, 24)))


def test_percentile_range_matches_reference():
    x = make_input('heavy', shape=(4, 50, 32))
    pcts = (0.99, 0.999, 0.9999)
    q = calibrate(UniformQuantizer(4, range_method='percentile', percentiles=pcts), x)
    flat = x.flatten().double()
    best = None
    for p in pcts:  # the reference search: torch.quantile on the whole tensor, L2 error of x̂
        lo, hi = torch.quantile(flat, 1 - p), torch.quantile(flat, p)
        err = float((ref_tensor(x, lo, hi, 4, False) - x.double()).square().mean())
        if best is None or err < best[0]:
            best = (err, lo, hi)
    scale = (best[2] - best[1]) / 15
    assert float(q.scale) == pytest.approx(float(scale), rel=1e-5)


def test_mse_search_beats_minmax_on_heavy_tails():
    x = make_input('heavy', shape=(4, 50, 32))
    mm = calibrate(UniformQuantizer(4), x)
    mse = calibrate(UniformQuantizer(4, range_method='mse'), x)
    err = lambda q: float((q(x) - x).square().mean())  # noqa: E731
    assert err(mse) < err(mm)
    # the search result is the best of its grid: check against a brute-force loop over the same grid
    lo, hi = x.min(), x.max()
    errs = [float((ref_tensor(x, lo * a, hi * a, 4, False) - x.double()).square().mean())
            for a in torch.linspace(0.01, 1.2, 100).tolist()]
    assert err(mse) <= min(errs) * (1 + 1e-3)


@pytest.mark.parametrize('q', [0.0, 0.001, 0.3, 0.5, 0.77, 0.999, 1.0])
def test_group_quantile_matches_torch_quantile(q):
    x = make_input('heavy', shape=(5, 1001))
    # the reference in float64: torch.quantile computes the rank in the input's dtype, group_quantile in float64
    ref = torch.quantile(x.double(), q, dim=1).float()
    assert torch.allclose(group_quantile(x, q), ref, rtol=0, atol=1e-5)


def test_group_quantiles_on_a_row_longer_than_torch_quantile_accepts():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 17_000_000, generator=gen)
    qs = [0.99999, 0.999, 0.001, 0.00001]
    got = group_quantiles(x, qs)[0]
    srt_top = torch.topk(x[0], 20_000, largest=True).values
    srt_bot = torch.topk(x[0], 20_000, largest=False).values
    n = x.shape[1]
    for i, q in enumerate(qs):  # reference: order statistics from an independent top-k, linear interpolation
        pos = q * (n - 1)
        lo_rank = math.floor(pos)
        frac = pos - lo_rank
        if q > 0.5:
            v_lo, v_hi = srt_top[n - 1 - lo_rank], srt_top[n - 2 - lo_rank]
        else:
            v_lo, v_hi = srt_bot[lo_rank], srt_bot[lo_rank + 1]
        assert float(got[i]) == pytest.approx(float(v_lo + frac * (v_hi - v_lo)), abs=1e-6)


def test_strided_columns_stays_in_bounds_for_long_rows():
    n = 20_000_003  # beyond float32's exact integers
    x = torch.arange(n, dtype=torch.int64)[None]
    cols = strided_columns(x, 1000)[0]
    assert int(cols[0]) == 0 and int(cols[-1]) == n - 1
    assert bool((cols[1:] > cols[:-1]).all())


def test_symmetric_codes_are_signed():
    x = make_input('heavy')
    q = calibrate(UniformQuantizer(3, symmetric=True), x)
    codes = q.quantize(x)
    assert int(codes.min()) >= -4 and int(codes.max()) <= 3 and int(codes.min()) < 0
    assert int(q.quantize(x * 10).min()) == -4
    assert float(q.zero_point) == 0.0


def test_gradient_flows_straight_through():
    x = make_input('ln').requires_grad_(True)
    q = calibrate(UniformQuantizer(4), x.detach())
    q(x).sum().backward()
    codes = q.quantize(x.detach())
    inside = (codes > 0) & (codes < 15)  # strictly inside the code range (torch's clamp passes no gradient at a bound)
    assert torch.equal(x.grad[inside], torch.ones_like(x.grad[inside]))
    assert bool(inside.any())


@pytest.mark.parametrize('kwargs, field', [
    (dict(range_method='median'), 'range_method'),
    (dict(percentiles=(0.3, )), 'percentiles'),
    (dict(search_steps=0), 'search_steps'),
    (dict(max_samples=3), 'max_samples'),
    (dict(granularity='per_token', range_method='mse'), 'range_method'),
    (dict(granularity='per_pixel'), 'granularity'),
])
def test_invalid_settings_raise_naming_the_field(kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        UniformQuantizer(4, **kwargs)


def test_fake_quant_affine_writes_to_out_with_the_same_numbers():
    from quant_hooks.quantizers.functional import fake_quant_affine
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g).t()  # channel-last values seen as [C, S]
    s, z = torch.rand(5, 1, generator=g) * 0.1 + 0.01, torch.randint(0, 16, (5, 1), generator=g).float()
    ref = (torch.clamp(torch.round(x / s) + z, 0, 15) - z) * s
    buf = torch.empty_like(x)
    out = fake_quant_affine(x, s, z, 0, 15, out=buf)
    assert out.data_ptr() == buf.data_ptr() and torch.equal(out, ref)
    assert torch.equal(fake_quant_affine(x, s, z, 0, 15), ref)
    with pytest.raises(QuantizerError, match='out=.*autograd'):
        fake_quant_affine(x.clone().requires_grad_(), s, z, 0, 15, out=buf)
