"""ADFQ-ViT's shift-log2 quantizer (paper form, authors' code form, constant shifts) against the formulas."""
from __future__ import annotations

import math

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import QuantizerError, ShiftLog2Quantizer, UniformQuantizer


def ref_shift_log(x: torch.Tensor, shift: float, scale: float, bits: int, form: str, eps: float,
                  clamp_below: bool) -> torch.Tensor:
    """Value by value. Paper: q = clamp(round(-log2(x'/Δ)), 0, 2^b - 1), x̂ = 2^-q·Δ + s. Code:
    q = round(-2·log2(x'/Δ)), codes >= 2^b give x̂' = 0, else x̂' = 2^-ceil(q/2)·(1 + (√2 - 1)·(q mod 2))·Δ,
    x̂ = x̂' + s - ε. With x' = x - s + ε (values below a constant shift clamped to it)."""
    qmax = 2**bits - 1
    xs = x - shift
    xs = xs.clamp_min(0) if clamp_below else xs
    ratio = ((xs + eps) / scale).flatten().tolist()  # x'/Δ in float32, as the quantizer computes it
    out = []
    for v in ratio:
        if form == 'paper':
            q = min(max(round(-math.log2(v)) if v > 0 else qmax, 0), qmax)
            out.append(2.0**-q * scale + shift)
        else:
            q = round(-2 * math.log2(v)) if v > 0 else math.inf
            if q > qmax:
                out.append(0.0 + shift - eps)
                continue
            q = max(q, 0)
            out.append(2.0**-math.ceil(q / 2) * (1 + (math.sqrt(2) - 1) * (q % 2)) * scale + shift - eps)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def assert_matches(out, ref):
    close = torch.isclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert float((~close).double().mean()) <= 2e-3, f'{int((~close).sum())} of {close.numel()} values differ'


@pytest.mark.parametrize('bits', [2, 3, 4, 6, 8])
@pytest.mark.parametrize('kind', ['gelu', 'heavy'])
def test_paper_form_with_calibrated_shift_matches_reference(kind, bits):
    x = make_input(kind)
    q = calibrate(ShiftLog2Quantizer(bits, form='paper', shift='calibrated', range_method='minmax'), x[:1], x[1:])
    s = float(x.min())
    assert float(q.shift) == s
    assert float(q.scale) == pytest.approx(float(x.max()) - s + 1e-6, rel=1e-6)
    x_new = make_input(kind, seed=4)  # values below the calibrated shift are clamped to it
    assert_matches(q(x_new), ref_shift_log(x_new, s, float(q.scale), bits, 'paper', 1e-6, clamp_below=True))


@pytest.mark.parametrize('bits', [2, 3, 4, 6, 7, 8])
@pytest.mark.parametrize('kind', ['gelu', 'heavy'])
def test_code_form_with_current_shift_matches_reference(kind, bits):
    x = make_input(kind)
    q = calibrate(ShiftLog2Quantizer(bits, form='code', shift='current'), x)
    for inp in (x, make_input(kind, seed=4) * 2):  # the shift is the min of each tensor being quantized
        ref = ref_shift_log(inp, float(inp.min()), float(q.scale), bits, 'code', 1e-6, clamp_below=False)
        assert_matches(q(inp), ref)


def test_constant_shift_matches_reference():
    x = make_input('gelu')
    q = calibrate(ShiftLog2Quantizer(4, form='code', shift=-0.17, range_method='minmax'), x)
    assert float(q.shift) == pytest.approx(-0.17)
    assert float(q.scale) == pytest.approx(float(x.max()) + 0.17 + 1e-6, rel=1e-6)
    low = torch.tensor([-0.5, -0.17, 0.0, 1.0])
    ref = ref_shift_log(low, float(q.shift), float(q.scale), 4, 'code', 1e-6, clamp_below=True)
    assert_matches(q(low), ref)


def test_percentile_search_matches_reference():
    x = make_input('gelu', shape=(4, 20, 32))
    pcts = (0.9, 0.99, 0.999)
    q = calibrate(ShiftLog2Quantizer(4, form='code', shift=-0.17, percentiles=pcts), x)
    shifted = (x.double() + 0.17).clamp_min(0) + 1e-6
    best = None
    for p in pcts:  # reference: quantiles of x' = x - s + ε, L2 error of x̂' against x'
        cand = float(torch.quantile(shifted.flatten(), p))
        err = float((ref_shift_log(x, -0.17, cand, 4, 'code', 1e-6, True) - x.double()).square().sum())
        if best is None or err < best[0]:
            best = (err, cand)
    assert float(q.scale) == pytest.approx(best[1], rel=1e-5)


def test_codes_underflow_only_in_the_code_form():
    x = torch.tensor([0.0, 1e-5, 0.5, 1.0])
    paper = ShiftLog2Quantizer(3, form='paper', shift=0.0, range_method='minmax')
    code = ShiftLog2Quantizer(3, form='code', shift=0.0, range_method='minmax')
    for q in (paper, code):
        calibrate(q, x)
    assert float(paper(x)[1]) == pytest.approx(2.0**-7)  # clamped to the smallest level
    assert float(code(x)[1]) == pytest.approx(-1e-6, abs=1e-9)  # flushed: x̂' = 0, x̂ = s - ε


def test_autograd_path_equals_the_in_place_path_and_passes_gradients():
    x = make_input('gelu')
    for q in (calibrate(ShiftLog2Quantizer(4), x), calibrate(ShiftLog2Quantizer(4, form='code', shift='current'), x)):
        xg = x.clone().requires_grad_(True)
        out = q(xg)
        assert torch.equal(out.detach(), q(x))
        out.sum().backward()
        assert bool((xg.grad != 0).any())


def test_beats_uniform_on_heavy_tailed_post_gelu_values():
    x = make_input('gelu', shape=(4, 50, 64))
    err = lambda q: float((q(x) - x).square().mean())  # noqa: E731
    uniform = calibrate(UniformQuantizer(4), x)
    for form, shift in (('paper', 'calibrated'), ('code', 'current')):
        assert err(calibrate(ShiftLog2Quantizer(4, form=form, shift=shift), x)) < err(uniform)


@pytest.mark.parametrize('kwargs, field', [
    (dict(form='other'), 'form'),
    (dict(shift='median'), 'shift'),
    (dict(shift=float('nan')), 'shift'),
    (dict(shift=True), 'shift'),
    (dict(eps=-1.0), 'eps'),
    (dict(range_method='mse'), 'range_method'),
    (dict(percentiles=(0.1, )), 'percentiles'),
])
def test_invalid_settings_raise(kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        ShiftLog2Quantizer(4, **kwargs)


@pytest.mark.parametrize('shift', ['current', 'calibrated', -0.17, 0.0])
@pytest.mark.parametrize('form', ['paper', 'code'])
def test_blocked_forward_equals_the_element_wise_form(form, shift, monkeypatch):
    """The no-autograd forward (table lookup, several blocks) gives exactly the autograd path's values."""
    from quant_hooks.quantizers import functional
    monkeypatch.setattr(functional, 'LOG_BLOCK', 777)
    x = make_input('gelu')
    q = calibrate(ShiftLog2Quantizer(4, form=form, shift=shift, range_method='minmax'), x)
    inp = torch.cat([make_input('gelu', seed=4).flatten(), torch.tensor([-0.0, 0.0, -5.0, 1e-40])])
    with torch.no_grad():
        fast = q(inp)
    slow = q(inp.clone().requires_grad_()).detach()
    assert torch.equal(fast, slow)
