"""FQ-ViT's power-of-two factor quantizer and log-int-softmax against plain reference formulas."""
from __future__ import annotations

import math

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import LogIntSoftmax, PowerOfTwoFactorQuantizer, QuantizerError, UniformQuantizer, int_exp


def fq(v: float, scale: float, z: float, bits: int) -> float:
    return (min(max(round(v / scale) + z, 0), 2**bits - 1) - z) * scale


def ref_ptf(x: torch.Tensor, bits: int, max_factor: int = 3):
    """Global Δ and z from min/max; per channel the factor α with the lowest L2 error (first on ties)."""
    qmax = 2**bits - 1
    lo, hi = float(x.min()), float(x.max())
    base = (hi - lo) / qmax
    z = min(max(round(-lo / base), 0), qmax)
    chans = x.reshape(-1, x.shape[-1]).t().tolist()
    alphas, out = [], []
    for vals in chans:
        errs = [sum((fq(v, base * 2.0**(a - max_factor), z, bits) - v)**2 for v in vals) for a in range(max_factor + 1)]
        a = errs.index(min(errs))
        alphas.append(a)
        out.append([fq(v, base * 2.0**(a - max_factor), z, bits) for v in vals])
    return torch.tensor(alphas), torch.tensor(out, dtype=torch.float64).t().reshape(x.shape)


@pytest.mark.parametrize('bits', [2, 4, 8])
@pytest.mark.parametrize('kind', ['ln', 'heavy'])
def test_ptf_matches_reference(kind, bits):
    x = make_input(kind, shape=(2, 9, 16))
    q = calibrate(PowerOfTwoFactorQuantizer(bits), x)
    alphas, ref = ref_ptf(x, bits)
    assert torch.equal(q.alpha, alphas)
    assert torch.allclose(q(x).double(), ref, rtol=1e-5, atol=1e-6)
    assert q.zero_point.shape == () and q.scale.shape == (16, )


def test_ptf_gives_small_channels_finer_steps():
    x = make_input('ln', shape=(4, 20, 32))  # channels 0 and 1 are 12x larger than the others
    q = calibrate(PowerOfTwoFactorQuantizer(8), x)
    assert q.alpha[:2].tolist() == [3, 3]
    assert float(q.alpha[2:].float().mean()) < 3
    err = lambda m: float((m(x) - x).square().mean())  # noqa: E731
    assert err(q) < err(calibrate(UniformQuantizer(8), x))


def test_ptf_channel_axis_for_nchw():
    x = make_input('ln', shape=(2, 16, 3, 3)).transpose(1, 3).contiguous()  # channels on axis 1 after transpose
    q = calibrate(PowerOfTwoFactorQuantizer(4, granularity=dict(type='per_channel', axis=1)), x)
    assert q.scale.shape == (3, 1, 1)


def ref_int_exp(x_int: int, s: float) -> int:
    """I-BERT's integer exp, written out: exp(r)·2^-z with r in (-ln2, 0] by a second-order polynomial."""
    b, c = 0.96963238 / 0.35815147, 1.0 / 0.35815147  # I-BERT's a = 0.35815147 divides out
    x0 = math.floor(-0.6931 / s)
    x_int = max(x_int, 30 * x0)
    z = math.floor(x_int / x0)
    r = x_int - x0 * z
    poly = (r + math.floor(b / s)) * r + math.floor(c / s**2)
    return max(math.floor(poly * 2.0**(30 - z)), 0)


def ref_log_int_softmax(x: torch.Tensor, logit_q: UniformQuantizer, bits: int, rounding: str,
                        underflow: str) -> torch.Tensor:
    s = float(logit_q.scale)
    xq = logit_q(x)
    out = []
    for row in xq.reshape(-1, x.shape[-1]).tolist():
        ints = [round(v / s) for v in row]
        m = max(ints)
        e = [ref_int_exp(i - m, s) for i in ints]
        total = sum(e)
        vals = []
        for ei in e:
            if rounding == 'log':
                q = round(-math.log2(ei / total)) if ei > 0 else math.inf
            else:  # FQ-ViT code: nearest power of two of round(Σe / e) in the linear domain
                v = round(total / ei) if ei > 0 else math.inf
                f = math.floor(math.log2(v)) if ei > 0 else math.inf
                q = f + (1 if ei > 0 and v - 2.0**f >= 2.0**(f - 1) else 0)
            if q > 2**bits - 1 and underflow == 'zero':
                vals.append(0.0)
            else:
                vals.append(2.0**-min(max(q, 0), 2**bits - 1))
        out.append(vals)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


@pytest.mark.parametrize('rounding, underflow', [('log', 'clamp'), ('linear', 'zero'), ('log', 'zero')])
@pytest.mark.parametrize('bits', [3, 4, 6])
def test_log_int_softmax_matches_reference(bits, rounding, underflow):
    x = make_input('logits', shape=(2, 2, 6, 12))
    q = calibrate(LogIntSoftmax(bits, rounding=rounding, underflow=underflow), x)
    ref = ref_log_int_softmax(x, q.logit_quantizer, bits, rounding, underflow)
    out = q(x).double()
    assert float((~torch.isclose(out, ref, rtol=1e-6, atol=0)).double().mean()) <= 5e-3


def test_log_int_softmax_approximates_softmax_and_is_softmax_when_off():
    x = make_input('logits', shape=(2, 2, 6, 12))
    q = LogIntSoftmax(4)
    q.observing = True
    assert torch.equal(q(x), torch.softmax(x, -1))  # a drop-in softmax while observing
    q.freeze()
    out = q(x)
    assert out.shape == x.shape
    levels = torch.tensor([2.0**-i for i in range(16)])
    assert bool(torch.isin(out, levels).all())
    # on moderate logits (fine logit step, so the integer ln2 is close to ln2), against the softmax of the 8-bit
    # logits: log2 rounding moves a probability by at most a factor √2, the integer exp adds ~1% per halving
    x = torch.randn(2, 2, 6, 12, generator=torch.Generator().manual_seed(0)) * 2
    q = calibrate(LogIntSoftmax(4), x)
    pq = torch.softmax(q.logit_quantizer(x), -1)
    big = pq > 2.0**-8
    ratio = q(x)[big] / pq[big]
    assert float(ratio.max()) < 2**0.5 * 1.1 and float(ratio.min()) > 2**-0.5 / 1.1
    q.enabled = False
    assert torch.equal(q(x), torch.softmax(x, -1))


def test_int_exp_follows_exp():
    s = torch.tensor(0.01)
    x_int = torch.arange(-800, 1, dtype=torch.float32)
    e = int_exp(x_int, s)
    ratio = (e / e[-1]) / torch.exp(x_int * s)
    # the polynomial is accurate within one ln2 interval; the integer ln2 (floor(-0.6931/Δ)·Δ = 0.70 here)
    # adds a drift of ~0.7% per halving, which I-BERT accepts
    assert float((ratio[x_int * s >= -0.69] - 1).abs().max()) < 0.005
    assert float((ratio - 1).abs().max()) < 0.1
    assert e.tolist() == [float(ref_int_exp(int(v), 0.01)) for v in x_int.tolist()]


@pytest.mark.parametrize('cls, kwargs, field', [
    (PowerOfTwoFactorQuantizer, dict(max_factor=9), 'max_factor'),
    (PowerOfTwoFactorQuantizer, dict(granularity='per_tensor'), 'granularity'),
    (LogIntSoftmax, dict(rounding='up'), 'rounding'),
    (LogIntSoftmax, dict(underflow='wrap'), 'underflow'),
    (LogIntSoftmax, dict(logit_quantizer=dict(type='uniform', granularity='per_token')), 'logit_quantizer'),
])
def test_invalid_settings_raise(cls, kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        cls(4, **kwargs)
