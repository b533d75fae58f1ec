"""ADFQ-ViT's per-patch outlier-aware quantizer against a plain per-token loop."""
from __future__ import annotations

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import OutlierAwareQuantizer, QuantizerError, UniformQuantizer


def ref_affine(v: float, lo: float, hi: float, bits: int, symmetric: bool) -> float:
    if symmetric:
        scale = max(max(abs(lo), abs(hi)) / (2**(bits - 1) - 1), 1e-8)
        return min(max(round(v / scale), -2**(bits - 1)), 2**(bits - 1) - 1) * scale
    scale = max((hi - lo) / (2**bits - 1), 1e-8)
    z = round(-lo / scale)
    return (min(max(round(v / scale) + z, 0), 2**bits - 1) - z) * scale


def ref_ppoq_dynamic(x: torch.Tensor, alpha: float, bits: int, symmetric: bool = False) -> torch.Tensor:
    """Token by token: outliers |v| > α kept; the inliers' own min/max give the token's Δ and z."""
    rows = x.reshape(-1, x.shape[-1]).tolist()
    out = []
    for row in rows:
        inliers = [v for v in row if abs(v) <= alpha]
        lo, hi = (min(inliers), max(inliers)) if inliers else (0.0, 0.0)
        out.append([v if abs(v) > alpha else ref_affine(v, lo, hi, bits, symmetric) for v in row])
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def ref_ppoq_static(x: torch.Tensor, calib: torch.Tensor, alpha: float, bits: int) -> torch.Tensor:
    """One (Δ, z) per token position from the inliers of that position over the batch and channels."""
    n = x.shape[1]
    out = torch.empty_like(x, dtype=torch.float64)
    for t in range(n):
        inl = [v for v in calib[:, t].flatten().tolist() if abs(v) <= alpha]
        lo, hi = min(inl), max(inl)
        for b in range(x.shape[0]):
            out[b, t] = torch.tensor([v if abs(v) > alpha else ref_affine(v, lo, hi, bits, False)
                                      for v in x[b, t].tolist()], dtype=torch.float64)
    return out


def assert_matches(out, ref):
    """Equal to the float64 reference up to float32 rounding (a value at an exact tie may move one step)."""
    close = torch.isclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert float((~close).double().mean()) <= 2e-3, f'{int((~close).sum())} of {close.numel()} values differ'


def with_awkward_tokens(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Add tokens whose inliers are all positive / all negative next to outliers, and one with no inlier."""
    x = x.clone()
    x[0, 0] = x[0, 0].abs() + 0.1
    x[0, 0, 0] = 3 * alpha
    x[0, 1] = -x[0, 1].abs() - 0.1
    x[0, 1, 1] = -3 * alpha
    x[0, 2] = 2 * alpha
    return x


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('bits', [2, 4, 8])
@pytest.mark.parametrize('kind', ['ln', 'heavy'])
def test_dynamic_matches_reference(kind, bits, symmetric):
    alpha = 3.0
    x = make_input(kind, shape=(2, 9, 24))
    q = OutlierAwareQuantizer(bits, threshold=alpha, symmetric=symmetric)
    assert not q.requires_calibration
    assert_matches(q(x), ref_ppoq_dynamic(x, alpha, bits, symmetric))


def test_tokens_with_one_signed_inliers_or_no_inlier_match_reference():
    alpha = 3.0
    x = with_awkward_tokens(make_input('ln'), alpha)
    q = OutlierAwareQuantizer(4, threshold=alpha)
    ref = ref_ppoq_dynamic(x, alpha, 4)
    assert_matches(q(x), ref)
    assert torch.equal(q(x), q._fake_quant_masked(x))


@pytest.mark.parametrize('granularity', ['per_token', 'per_token_static'])
def test_outliers_are_returned_exactly(granularity):
    alpha = 2.0
    x = make_input('heavy', shape=(3, 11, 32))
    q = calibrate(OutlierAwareQuantizer(4, granularity, threshold=alpha), x)
    out = q(x)
    mask = x.abs() > alpha
    assert bool(mask.any())
    assert torch.equal(out[mask], x[mask])
    assert not torch.equal(out[~mask], x[~mask])


def test_fast_path_equals_the_masked_form_and_the_autograd_form():
    x = make_input('ln', shape=(4, 17, 48))
    for q in (OutlierAwareQuantizer(4, threshold=3.0),
              calibrate(OutlierAwareQuantizer(4, 'per_token_static', threshold=3.0), x)):
        fast = q(x)
        assert torch.equal(fast, q._fake_quant_masked(x))
        assert torch.equal(fast, q(x.clone().requires_grad_(True)).detach())


@pytest.mark.parametrize('block', [1000, 1 << 18])
@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('bits', [2, 3, 4, 6, 8])
def test_dynamic_fast_path_without_the_redundant_clamps_equals_the_masked_form(bits, symmetric, block,
                                                                               monkeypatch):
    """The dynamic float32 path skips the clamps that a token's own range makes redundant; on many tokens of
    random offsets and widths (every rounding case of Δ and z) it still equals the clamped, masked form."""
    from quant_hooks.quantizers import outlier
    monkeypatch.setattr(outlier, 'PPOQ_BLOCK', block)
    gen = torch.Generator().manual_seed(bits)
    rows = 20000
    x = torch.rand(rows, 16, generator=gen) * torch.exp(torch.randn(rows, 1, generator=gen) * 3)
    x = x + torch.randn(rows, 1, generator=gen) * x.amax(dim=1, keepdim=True)
    x = x.clamp_(-1e4, 1e4)
    x[::7, 3], x[::7, 4], x[::7, 5] = 1e6, -1e-3, 1e-3  # outliers in some tokens, whose inliers straddle 0
    q = OutlierAwareQuantizer(bits, threshold=1e5, symmetric=symmetric)
    with torch.no_grad():
        masked = q._fake_quant_masked(x)
        q._fake_quant_masked = None  # the fast path must not fall back
        assert torch.equal(q(x), masked)


@pytest.mark.parametrize('kind', ['ln', 'heavy'])
def test_static_minmax_matches_reference(kind):
    alpha = 3.0
    calib_x = make_input(kind, seed=1)
    q = calibrate(OutlierAwareQuantizer(4, 'per_token_static', threshold=alpha), calib_x[:1], calib_x[1:])
    x = make_input(kind, seed=2)
    assert_matches(q(x), ref_ppoq_static(x, calib_x, alpha, 4))


def test_static_percentile_matches_reference():
    alpha = 4.0
    x = make_input('heavy', shape=(4, 5, 64))
    pcts = (0.9, 0.99, 1.0)
    q = calibrate(OutlierAwareQuantizer(4, 'per_token_static', threshold=alpha, range_method='percentile',
                                        percentiles=pcts), x)
    for t in range(x.shape[1]):  # per position: candidate ranges from inlier quantiles, lowest inlier L2 error
        inl = x[:, t].flatten()
        inl = inl[inl.abs() <= alpha].double()
        best = None
        for p in pcts:
            lo, hi = float(torch.quantile(inl, 1 - p)), float(torch.quantile(inl, p))
            err = sum((ref_affine(v, lo, hi, 4, False) - v)**2 for v in inl.tolist()) / len(inl)
            if best is None or err < best[0]:
                best = (err, lo, hi)
        assert float(q.scale[t]) == pytest.approx((best[2] - best[1]) / 15, rel=1e-5)


def test_dynamic_form_equals_static_form_when_the_token_count_matches():
    x = make_input('ln', shape=(1, 13, 40))
    static = calibrate(OutlierAwareQuantizer(4, 'per_token_static', threshold=3.0), x)
    dynamic = OutlierAwareQuantizer(4, 'per_token', threshold=3.0)
    assert torch.equal(static(x), dynamic(x))


def test_dynamic_form_takes_any_token_count_and_static_form_names_the_problem():
    q = OutlierAwareQuantizer(4, threshold=3.0)
    for n in (1, 5, 197, 1000):
        x = make_input('ln', shape=(2, n, 24))
        out = q(x)
        assert out.shape == x.shape
        if n <= 5:
            assert_matches(out, ref_ppoq_dynamic(x, 3.0, 4))
    static = calibrate(OutlierAwareQuantizer(4, 'per_token_static', threshold=3.0), make_input('ln'))
    with pytest.raises(QuantizerError, match="9 token positions|calibrated for 9"):
        static(make_input('ln', shape=(2, 10, 24)))


def test_other_layouts_use_the_token_and_channel_axes():
    x = make_input('ln', shape=(2, 24, 9))  # channels first: [B, C, N]
    q = OutlierAwareQuantizer(4, dict(type='per_token', token_axis=-1, channel_axis=-2), threshold=3.0)
    ref = ref_ppoq_dynamic(x.transpose(1, 2), 3.0, 4).transpose(1, 2)
    assert_matches(q(x), ref)


def test_reports_the_outlier_ratio():
    x = make_input('heavy', shape=(3, 11, 32))
    q = calibrate(OutlierAwareQuantizer(4, threshold=2.0, track_outliers=True), x[:2], x[2:])
    assert float(q.outlier_ratio) == pytest.approx(float((x.abs() > 2.0).double().mean()))
    q(x[:1])
    assert q.last_outlier_ratio == pytest.approx(float((x[:1].abs() > 2.0).double().mean()))
    assert torch.isnan(OutlierAwareQuantizer(4).outlier_ratio)


def test_beats_per_tensor_minmax_on_outlier_channels():
    x = make_input('ln', shape=(4, 33, 64))
    ppoq = OutlierAwareQuantizer(4, threshold=4.0)
    minmax = calibrate(UniformQuantizer(4), x)
    err = lambda out: float((out - x).square().mean())  # noqa: E731
    assert err(ppoq(x)) < 0.1 * err(minmax(x))


@pytest.mark.parametrize('kwargs, field', [
    (dict(threshold=-1.0), 'threshold'),
    (dict(threshold=float('nan')), 'threshold'),
    (dict(threshold='big'), 'threshold'),
    (dict(range_method='percentile'), 'range_method'),
    (dict(granularity='per_tensor'), 'granularity'),
    (dict(granularity='per_token_static', range_method='mse'), 'range_method'),
    (dict(granularity='per_token_static', percentiles=()), 'percentiles'),
])
def test_invalid_settings_raise(kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        OutlierAwareQuantizer(4, **kwargs)


@pytest.mark.parametrize('block', [100, 1 << 18])
def test_row_blocks_that_need_the_masked_form_take_it_alone(block, monkeypatch):
    """Blocks of rows are independent: a block holding a token whose inliers are all positive next to a zeroed
    outlier takes the masked form, the others the fast one; the whole equals the masked form."""
    from quant_hooks.quantizers import outlier
    monkeypatch.setattr(outlier, 'PPOQ_BLOCK', block)
    x = with_awkward_tokens(make_input('ln', shape=(3, 40, 24)), 3.0)
    q = OutlierAwareQuantizer(4, threshold=3.0)
    with torch.no_grad():
        assert torch.equal(q(x), q._fake_quant_masked(x))
        assert torch.equal(q(x.transpose(0, 1).contiguous()).transpose(0, 1), q._fake_quant_masked(x))
        assert torch.equal(q(x[:, :, ::2]), q._fake_quant_masked(x[:, :, ::2]))  # not contiguous: one block
