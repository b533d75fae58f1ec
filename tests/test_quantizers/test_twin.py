"""PTQ4ViT twin uniform quantizers against plain reference formulas."""
from __future__ import annotations

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import QuantizerError, TwinGeluQuantizer, TwinSoftmaxQuantizer


def ref_twin_softmax(x: torch.Tensor, split: float, bits: int) -> torch.Tensor:
    """R1 = [0, split) with Δ1 = split/(2^(b-1) - 1), R2 = [split, 1] with Δ2 = 1/(2^(b-1) - 1)."""
    m = 2**(bits - 1) - 1
    d1, d2 = split / m, 1.0 / m
    out = []
    for v in x.flatten().tolist():
        d = d1 if v < split else d2
        out.append(min(max(round(v / d), 0), m) * d)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def ref_twin_gelu(x: torch.Tensor, scale_pos: float, bits: int, neg_bound: float = 0.16997) -> torch.Tensor:
    """Negative values: Δn = neg_bound / 2^(b-1), codes in [-2^(b-1), 0]; others: Δp, codes in [0, 2^(b-1) - 1]."""
    h = 2**(bits - 1)
    dn = neg_bound / h
    out = []
    for v in x.flatten().tolist():
        if v < 0:
            out.append(min(max(round(v / dn), -h), 0) * dn)
        else:
            out.append(min(max(round(v / scale_pos), 0), h - 1) * scale_pos)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def assert_matches(out, ref):
    close = torch.isclose(out.double(), ref, rtol=1e-5, atol=1e-7)
    assert float((~close).double().mean()) <= 2e-3, f'{int((~close).sum())} of {close.numel()} values differ'


@pytest.mark.parametrize('bits', [2, 3, 4, 6, 8])
def test_twin_softmax_matches_reference_and_picks_the_best_split(bits):
    x = make_input('softmax', shape=(2, 3, 12, 12))
    q = calibrate(TwinSoftmaxQuantizer(bits), x)
    split = float(q.split)
    assert_matches(q(x), ref_twin_softmax(x, split, bits))
    errors = {i: float((ref_twin_softmax(x, 2.0**-i, bits) - x.double()).square().sum()) for i in range(16)}
    assert errors[round(-torch.log2(q.split).item())] <= min(errors.values()) * (1 + 1e-6)


def test_twin_softmax_ranges_share_the_code_space():
    q = TwinSoftmaxQuantizer(4)
    q.set_split(torch.tensor(0.25))
    x = torch.tensor([0.0, 0.05, 0.249, 0.25, 0.6, 1.0, 1.5])
    codes = q.quantize(x)
    assert codes.tolist() == [0.0, 1.0, 7.0, 10.0, 12.0, 15.0, 15.0]
    assert_matches(q(x), ref_twin_softmax(x, 0.25, 4))


def test_twin_softmax_per_head_splits():
    x = make_input('softmax', shape=(2, 4, 8, 8))
    q = calibrate(TwinSoftmaxQuantizer(4, granularity='per_head'), x)
    assert q.split.shape == (4, 1, 1)
    out = q(x)
    for h in range(4):
        assert_matches(out[:, h], ref_twin_softmax(x[:, h], float(q.split[h]), 4))


@pytest.mark.parametrize('bits', [2, 4, 6, 8])
@pytest.mark.parametrize('kind', ['gelu', 'heavy'])
def test_twin_gelu_matches_reference_and_is_the_best_of_its_grid(kind, bits):
    x = make_input(kind)
    q = calibrate(TwinGeluQuantizer(bits), x)
    assert_matches(q(x), ref_twin_gelu(x, float(q.scale_pos), bits))
    base = float(x.max()) / (2**(bits - 1) - 1)
    errs = [float((ref_twin_gelu(x, base * a, bits) - x.double()).square().sum())
            for a in torch.linspace(0.01, 1.2, 100).tolist()]
    got = float((ref_twin_gelu(x, float(q.scale_pos), bits) - x.double()).square().sum())
    assert got <= min(errs) * (1 + 1e-4)


def test_twin_gelu_represents_the_gelu_minimum_exactly():
    q = calibrate(TwinGeluQuantizer(4), make_input('gelu'))
    assert float(q(torch.tensor([-0.16997]))) == pytest.approx(-0.16997, rel=1e-6)
    assert q.quantize(torch.tensor([-0.16997, -1.0])).tolist() == [-8.0, -8.0]


def test_autograd_path_equals_the_in_place_path():
    x = make_input('gelu')
    q = calibrate(TwinGeluQuantizer(4), x)
    assert torch.equal(q(x.clone().requires_grad_(True)).detach(), q(x))


@pytest.mark.parametrize('cls, kwargs, field', [
    (TwinSoftmaxQuantizer, dict(split_exponents=()), 'split_exponents'),
    (TwinSoftmaxQuantizer, dict(split_exponents=(-1, )), 'split_exponents'),
    (TwinSoftmaxQuantizer, dict(granularity='per_token'), 'granularity'),
    (TwinGeluQuantizer, dict(neg_bound=0.0), 'neg_bound'),
    (TwinGeluQuantizer, dict(search_steps=0), 'search_steps'),
    (TwinGeluQuantizer, dict(granularity='per_token'), 'granularity'),
])
def test_invalid_settings_raise(cls, kwargs, field):
    with pytest.raises(QuantizerError, match=field):
        cls(4, **kwargs)
