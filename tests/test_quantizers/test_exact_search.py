"""Every quantizer with a search picks what a float64 reference that scores every calibration value picks.

The inputs are heavy-tailed with a few outlier channels, so that a strided sample of the values picks something
else (checked for each case with an explicit ``max_samples``); each case is calibrated on 32 tensors observed one
by one and on their concatenation (batch size 1 vs 32), which must give the same parameters.
"""
from __future__ import annotations

import math

import pytest
import torch
from qtest_utils import _student_t

from quant_hooks.quantizers import build_quantizer, calibrate

PCTS = (0.999, 0.9999, 0.99999)


def heavy(shape, seed=0, outlier_channels=(3, 17), factor=25.0):
    """Student-t (2 degrees of freedom) values with a few channels (last axis) scaled up."""
    x = _student_t(shape, torch.Generator().manual_seed(seed))
    x[..., list(outlier_channels)] *= factor
    return x


def groups(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``[G, S]`` float64 view: one row (axis None) or one row per index along ``axis``."""
    x = x.double()
    return x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.shape[axis], -1)


def quantile(xg: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(xg, q, dim=1)


def ref_affine(xg, lo, hi, bits, symmetric=False):
    """Float64 fake quantization of each row of ``xg`` with its range ``lo[g], hi[g]``."""
    lo, hi = lo[:, None], hi[:, None]
    if symmetric:
        scale = (torch.maximum(lo.abs(), hi.abs()) / (2**(bits - 1) - 1)).clamp_min(1e-8)
        return torch.clamp(torch.round(xg / scale), -2**(bits - 1), 2**(bits - 1) - 1) * scale
    scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-8)
    z = torch.round(-lo / scale)
    return (torch.clamp(torch.round(xg / scale) + z, 0, 2**bits - 1) - z) * scale


def sq_err(xg, xq, weight=None):
    d = (xg - xq).square()
    return (d if weight is None else d * weight).sum(1)


def pick(cands: list[torch.Tensor], errs: list[torch.Tensor]) -> torch.Tensor:
    """Per group, the candidate with the smallest error (the first on ties)."""
    idx = torch.stack(errs, 1).argmin(1)
    return torch.stack(cands, 1).gather(1, idx[:, None])[:, 0]


def calibrated(cfg, x, split=True):
    """A quantizer built from ``cfg`` calibrated on ``x`` as 32 tensors one by one (or as one tensor)."""
    tensors = x.chunk(32, dim=0) if split else (x, )
    return calibrate(build_quantizer(cfg), *tensors)


def assert_same_batch_size_1_and_32(many, cfg, x, names):
    """``many`` (calibrated on 32 tensors) equals the quantizer calibrated on their concatenation."""
    one = calibrated(cfg, x, split=False)
    for n in names:
        torch.testing.assert_close(getattr(one, n), getattr(many, n), rtol=1e-6, atol=0)


def assert_sample_changes(cfg, x, name, exact):
    sampled = calibrated(dict(cfg, max_samples=512), x)
    assert not torch.allclose(getattr(sampled, name).double(), exact.double(), rtol=1e-5), \
        'the test tensor should make a strided sample pick something else'
    assert sampled.describe()['exact'] is False


# -- uniform ------------------------------------------------------------------------------------------------
def ref_uniform_percentile(x, axis, bits):
    xg = groups(x, axis)
    los = [quantile(xg, 1 - p) for p in PCTS]
    his = [quantile(xg, p) for p in PCTS]
    errs = [sq_err(xg, ref_affine(xg, lo, hi, bits)) for lo, hi in zip(los, his)]
    return pick(los, errs), pick(his, errs)


@pytest.mark.parametrize('axis', [None, -1])
def test_uniform_percentile_matches_full_reference(axis):
    x = heavy((64, 50, 32))
    gran = 'per_tensor' if axis is None else dict(type='per_channel', axis=axis)
    cfg = dict(type='uniform', bits=4, range_method='percentile', granularity=gran)
    q = calibrated(cfg, x)
    lo, hi = ref_uniform_percentile(x, axis, 4)
    ref_scale = ((hi - lo) / 15).clamp_min(1e-8)
    torch.testing.assert_close(q.scale.flatten().double(), ref_scale, rtol=1e-5, atol=0)
    torch.testing.assert_close(q.zero_point.flatten().double(), torch.round(-lo / ref_scale), rtol=0, atol=0)
    assert q.describe()['exact'] and q.describe()['scored_values'] == x.numel()
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale', 'zero_point'])
    assert_sample_changes(dict(cfg, quantile_mode='per_batch_mean'), x, 'scale', q.scale)


def ref_omse(w, bits, alphas, symmetric=False):
    """Per output channel (row) of a weight: the α·[min, max] with the smallest squared error."""
    wg = w.double()
    lo, hi = wg.amin(1), wg.amax(1)
    a32 = torch.linspace(0.01, 1.2, alphas)  # the grid as the quantizer builds it (float32 values)
    cands_lo = [lo * float(a) for a in a32]
    cands_hi = [hi * float(a) for a in a32]
    errs = [sq_err(wg, ref_affine(wg, cl, ch, bits, symmetric)) for cl, ch in zip(cands_lo, cands_hi)]
    return pick(cands_lo, errs), pick(cands_hi, errs)


@pytest.mark.parametrize('symmetric', [False, True])
def test_uniform_omse_per_channel_weight_matches_full_reference(symmetric):
    w = heavy((48, 768), seed=1, outlier_channels=(5, 200, 700), factor=12.0) * 0.02
    cfg = dict(type='uniform', bits=4, range_method='mse', granularity=dict(type='per_channel', axis=0),
               symmetric=symmetric)
    q = calibrate(build_quantizer(cfg), w)
    lo, hi = ref_omse(w, 4, 100, symmetric)
    ref_scale = (torch.maximum(lo.abs(), hi.abs()) / 7) if symmetric else (hi - lo) / 15
    torch.testing.assert_close(q.scale.flatten().double(), ref_scale, rtol=1e-5, atol=0)
    sampled = calibrate(build_quantizer(dict(cfg, max_samples=768)), w)  # 16 values per row
    assert (sampled.scale != q.scale).float().mean() > 0.5


def test_uniform_omse_per_tensor_activation_matches_full_reference():
    x = heavy((32, 20, 48), seed=2)
    cfg = dict(type='uniform', bits=3, range_method='mse')
    q = calibrated(cfg, x)
    lo, hi = ref_omse(x.reshape(1, -1), 3, 100)
    torch.testing.assert_close(q.scale.double().reshape(1), ((hi - lo) / 7), rtol=1e-5, atol=0)
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale', 'zero_point'])
    assert_sample_changes(cfg, x, 'scale', q.scale)


# -- log2 / log√2 -------------------------------------------------------------------------------------------
def ref_log_fq(xg, delta, bits, k):
    """RepQ-ViT log quantizer in float64: codes beyond 2^b - 1 (and x <= 0) dequantize to 0."""
    d = delta[:, None]
    t = torch.round(-k * torch.log2(xg.clamp_min(0) / d))
    out = d * torch.exp2(-t.clamp(0, 2**bits - 1) / k)
    return torch.where((t >= 2**bits) | (xg <= 0), torch.zeros_like(out), out)


def softmax_input():
    """Attention probabilities ``[64, 4 heads, 8, 24]`` whose high quantiles lie below 1."""
    return torch.softmax(heavy((64, 4, 8, 24), seed=3, outlier_channels=(0, ), factor=4.0) * 0.3, dim=-1)


@pytest.mark.parametrize('name,k', [('log2', 1), ('log_sqrt2', 2)])
@pytest.mark.parametrize('gran', ['per_tensor', 'per_head'])
def test_log_percentile_delta_matches_full_reference(name, k, gran):
    x = softmax_input()
    cfg = dict(type=name, bits=4, granularity=gran)
    q = calibrated(cfg, x)
    xg = groups(x, None if gran == 'per_tensor' else 1)
    cands = [quantile(xg, p) for p in PCTS]
    errs = [sq_err(xg, ref_log_fq(xg, c, 4, k)) for c in cands]
    torch.testing.assert_close(q.scale.flatten().double(), pick(cands, errs), rtol=1e-5, atol=0)
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale'])


def test_log_sqrt2_percentile_sampled_differs():
    x = softmax_input()
    cfg = dict(type='log_sqrt2', bits=4)
    assert_sample_changes(dict(cfg, quantile_mode='per_batch_mean'), x, 'scale', calibrated(cfg, x).scale)


# -- FQ-ViT PTF ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('bits', [4, 8])
def test_ptf_factors_match_full_reference(bits):
    x = heavy((64, 20, 48), seed=4, outlier_channels=(1, 7, 30), factor=8.0)
    cfg = dict(type='ptf', bits=bits)
    q = calibrated(cfg, x)
    xg = groups(x, -1)
    qmax = 2**bits - 1
    base = max((x.max() - x.min()).double() / qmax, 1e-8)
    zp = torch.clamp(torch.round(-x.min().double() / base), 0, qmax)
    errs = []
    for a in range(4):
        s = base * 2.0**(a - 3)
        errs.append(sq_err(xg, (torch.clamp(torch.round(xg / s) + zp, 0, qmax) - zp) * s))
    ref_alpha = torch.stack(errs, 1).argmin(1)
    assert torch.equal(q.alpha.flatten(), ref_alpha)
    assert q.describe()['factor_counts'] == torch.bincount(ref_alpha, minlength=4).tolist()
    assert_same_batch_size_1_and_32(q, cfg, x, ['alpha', 'scale', 'zero_point'])
    assert_sample_changes(cfg, x, 'alpha', q.alpha)


# -- PTQ4ViT twin uniform -----------------------------------------------------------------------------------
@pytest.mark.parametrize('gran', ['per_tensor', 'per_head'])
def test_twin_softmax_split_matches_full_reference(gran):
    x = torch.softmax(heavy((64, 4, 12, 12), seed=5, outlier_channels=(0, ), factor=3.0) * 2.0, dim=-1)
    cfg = dict(type='twin_softmax', bits=4, granularity=gran)
    q = calibrated(cfg, x)
    xg = groups(x, None if gran == 'per_tensor' else 1)
    splits = [torch.full((xg.shape[0], ), 2.0**-i, dtype=torch.float64) for i in range(16)]
    errs = []
    for s in splits:
        d1, d2 = s[:, None] / 7, 1.0 / 7
        xq = torch.where(xg < s[:, None], torch.clamp(torch.round(xg / d1), 0, 7) * d1,
                         torch.clamp(torch.round(xg / d2), 0, 7) * d2)
        errs.append(sq_err(xg, xq))
    torch.testing.assert_close(q.split.flatten().double(), pick(splits, errs), rtol=0, atol=0)
    assert_same_batch_size_1_and_32(q, cfg, x, ['split'])


@pytest.mark.parametrize('gran', ['per_tensor', 'per_channel'])
def test_twin_gelu_scale_matches_full_reference(gran):
    x = torch.nn.functional.gelu(heavy((64, 20, 24), seed=6, factor=6.0))
    cfg = dict(type='twin_gelu', bits=4, granularity=gran)
    q = calibrated(cfg, x)
    xg = groups(x, None if gran == 'per_tensor' else -1)
    base = (xg.amax(1).clamp_min(0) / 7).clamp_min(1e-8)
    dn = 0.16997 / 8
    cands, errs = [], []
    for a in torch.linspace(0.01, 1.2, 100):
        dp = base * float(a)
        xq = torch.where(xg < 0, torch.clamp(torch.round(xg / dn), -8, 0) * dn,
                         torch.clamp(torch.round(xg / dp[:, None]), 0, 7) * dp[:, None])
        cands.append(dp)
        errs.append(sq_err(xg, xq))
    torch.testing.assert_close(q.scale_pos.flatten().double(), pick(cands, errs), rtol=1e-5, atol=0)
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale_pos'])
    assert_sample_changes(cfg, x, 'scale_pos', q.scale_pos)


# -- Q-HyViT ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('loss', ['mse', 'cosine'])
def test_qhyvit_choice_matches_full_reference(loss):
    x = heavy((64, 20, 24), seed=7, outlier_channels=(2, ), factor=40.0)
    cfg = dict(type='qhyvit', bits=4, loss=loss)
    q = calibrated(cfg, x)
    xg = groups(x, -1)
    lo_c, hi_c = xg.amin(1), xg.amax(1)
    losses = {}
    for gran in ('per_tensor', 'per_channel'):
        lo, hi = (lo_c, hi_c) if gran == 'per_channel' else (lo_c.min().expand_as(lo_c), hi_c.max().expand_as(hi_c))
        for scheme in ('asymmetric', 'symmetric'):
            xq = ref_affine(xg, lo, hi, 4, scheme == 'symmetric')
            if loss == 'mse':
                losses[f'{gran}/{scheme}'] = float((xq - xg).square().mean())
            else:
                losses[f'{gran}/{scheme}'] = 1 - float((xq * xg).sum() / (xq.norm() * xg.norm()))
    got = q.choice['losses']
    for name, value in losses.items():
        assert got[name] == pytest.approx(value, rel=1e-4)
    best = min(losses, key=losses.get)
    assert f'{q.choice["granularity"]}/{q.choice["scheme"]}' == best
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale', 'zero_point', 'losses'])


# -- ADFQ-ViT shift-log2 and PPOQ ---------------------------------------------------------------------------
@pytest.mark.parametrize('form', ['paper', 'code'])
def test_shift_log2_delta_matches_full_reference(form):
    x = torch.nn.functional.gelu(heavy((64, 20, 24), seed=8, factor=5.0))
    cfg = dict(type='shift_log2', bits=4, form=form)
    q = calibrated(cfg, x)
    xg = groups(x, None)
    s, eps, k = float(x.min()), 1e-6, 1 if form == 'paper' else 2
    xs = (xg - s).clamp_min(0) + eps
    cands, errs = [], []
    for p in PCTS:
        d = (quantile(xg, p) - s).clamp_min(0) + eps
        t = torch.round(-k * torch.log2(xs / d[:, None]))
        xq = d[:, None] * torch.exp2(-t.clamp(0, 15) / k)
        if form == 'code':
            xq = torch.where(t >= 16, torch.zeros_like(xq), xq)
        cands.append(d)
        errs.append(sq_err(xs, xq))
    torch.testing.assert_close(q.scale.reshape(1).double(), pick(cands, errs), rtol=1e-5, atol=0)
    assert float(q.shift) == s
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale', 'shift'])


@pytest.mark.parametrize('stats', ['exclude', 'zero'])
def test_ppoq_static_percentile_matches_full_reference(stats):
    x = heavy((64, 12, 48), seed=9, outlier_channels=(4, 40), factor=3.0)
    alpha = 6.0
    cfg = dict(type='ppoq', bits=4, threshold=alpha, granularity='per_token_static', range_method='percentile',
               outlier_stats=stats)
    q = calibrated(cfg, x)
    xg = groups(x, -2)
    inlier = xg.abs() <= alpha
    los, his, errs = [], [], []
    for p in PCTS:
        if stats == 'zero':
            vals = torch.where(inlier, xg, torch.zeros_like(xg))
            lo, hi = quantile(vals, 1 - p), quantile(vals, p)
            err = sq_err(vals, ref_affine(vals, lo, hi, 4))
        else:  # quantiles of each row's inliers
            lo = torch.stack([torch.quantile(r[m], 1 - p) for r, m in zip(xg, inlier)])
            hi = torch.stack([torch.quantile(r[m], p) for r, m in zip(xg, inlier)])
            err = sq_err(xg, ref_affine(xg, lo, hi, 4), inlier.double())
        los.append(lo)
        his.append(hi)
        errs.append(err)
    lo, hi = pick(los, errs), pick(his, errs)
    torch.testing.assert_close(q.scale.flatten().double(), ((hi - lo) / 15).clamp_min(1e-8), rtol=1e-5, atol=0)
    assert_same_batch_size_1_and_32(q, cfg, x, ['scale', 'zero_point'])


def test_ppoq_outlier_stats_choice_changes_the_ranges():
    x = heavy((8, 12, 48), seed=9, outlier_channels=(4, 40), factor=3.0).abs() + 1.0  # all values positive
    cfg = dict(type='ppoq', bits=4, threshold=6.0, granularity='per_token_static')
    ex = calibrated(dict(cfg, outlier_stats='exclude'), x)
    zero = calibrated(dict(cfg, outlier_stats='zero'), x)
    # with zeros counted every token's range starts at 0: the zero-point is 0; inliers alone start above 1
    assert torch.all(zero.zero_point == 0) and torch.all(ex.zero_point < 0)


# -- wrappers -----------------------------------------------------------------------------------------------
def test_wrappers_run_the_passes_of_their_inner_quantizer():
    x = heavy((16, 10, 24), seed=10)
    inner = dict(type='uniform', bits=4, range_method='percentile')
    plain = calibrated(inner, x)
    noisy = calibrated(dict(type='noisy', quantizer=inner), x)
    assert noisy.calibration_passes == 2 and torch.equal(noisy.quantizer.scale, plain.scale)
    lis = calibrated(dict(type='log_int_softmax', logit_quantizer=inner), x)
    assert torch.equal(lis.logit_quantizer.scale, plain.scale)
    assert math.isfinite(noisy.describe()['inner']['percentile'])


@pytest.mark.parametrize('cfg', [
    dict(type='uniform', bits=4, range_method='percentile'),
    dict(type='log_sqrt2', bits=4),
    dict(type='log2', bits=4, range_method='percentile'),
    dict(type='shift_log2', bits=4, form='code', shift='current'),
    dict(type='shift_log2', bits=4),
    dict(type='ppoq', bits=4, threshold=50.0, granularity='per_token_static', range_method='percentile'),
], ids=lambda c: '-'.join(str(v) for v in c.values()))
def test_a_stream_whose_first_tensor_holds_the_tail_takes_a_tails_pass(cfg):
    """When the first observed tensor holds the largest values, the streaming top-k buffers drop values the final
    quantiles need: the search runs an extra pass with buffers of the final size. Candidates must wait for it, and
    the result equals the calibration of the same tensors in an order where streaming is exact."""
    gen = torch.Generator().manual_seed(0)
    small = [torch.rand(1, 4, 5000, generator=gen) for _ in range(7)]
    big = torch.rand(1, 4, 5000, generator=gen) * 10.0
    first = build_quantizer(cfg)
    calibrate(first, big, *small)
    last = build_quantizer(cfg)
    calibrate(last, *small, big)
    info = first.describe()
    assert info['passes'] == last.describe()['passes'] + 1, (info, last.describe())
    for name, buf in last.named_buffers():
        torch.testing.assert_close(dict(first.named_buffers())[name], buf, rtol=0, atol=0, msg=name)
