"""Per-channel step sums from sorted values equal quantizing every value with every candidate."""
import pytest
import torch

from quant_hooks.quantizers import hybrid as hybrid_mod
from quant_hooks.quantizers.functional import affine_params, fake_quant_affine
from quant_hooks.quantizers.hybrid import HybridQuantizer
from quant_hooks.quantizers.sorted_scorer import SortedStepSums

from qtest_utils import calibrate


def channels(g, s, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(g, s, generator=gen) * torch.exp(torch.randn(g, 1, generator=gen))
    x[0] = x[0].abs() + 0.5  # a channel without negative values (zero-point outside the code range)
    x[1, :7] = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 3.0, -3.0, 0.5])
    return x


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('bits', [2, 4, 8])
def test_step_counts_and_sums_equal_the_quantized_values(bits, symmetric):
    x = channels(6, 5000, bits)
    lo, hi = x.amin(1), x.amax(1)
    alphas = torch.tensor([0.3, 0.7, 1.0])
    s, z = affine_params(lo[:, None] * alphas, hi[:, None] * alphas, bits, symmetric)  # [G, K]
    qn, qx = (-(2**(bits - 1)), 2**(bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    levels = (torch.arange(qn, qx + 1, dtype=torch.float32) - z[..., None]) * s[..., None]
    sorter = SortedStepSums(lambda v: fake_quant_affine(v, s[..., None], z[..., None], qn, qx), levels, lo, hi)
    n, s1, s2 = sorter.sums(x)
    q = fake_quant_affine(x[:, None, :].expand(-1, len(alphas), -1), s[..., None], z[..., None], qn, qx)
    hit = q[..., None] == levels[:, :, None, :]  # [G, K, S, L]
    assert torch.equal(n, hit.sum(2).double())
    torch.testing.assert_close(s1, (hit * x.double()[:, None, :, None]).sum(2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2, (x.double()**2).sum(1), rtol=1e-12, atol=0)
    assert sorter.sums(x * 2) is None  # outside the calibrated ranges


def test_a_function_that_is_not_a_step_function_of_its_levels_is_refused():
    x = channels(2, 100, 0)
    s, z = affine_params(x.amin(1, keepdim=True), x.amax(1, keepdim=True), 4, False)
    levels = (torch.arange(16, dtype=torch.float32) - z[..., None]) * s[..., None]
    with pytest.raises(ValueError):
        SortedStepSums(lambda v: fake_quant_affine(v, s[..., None], z[..., None], 0, 15), levels * 1.01,
                       x.amin(1), x.amax(1))


@pytest.mark.parametrize('overflow', ['clamp_range', 'symmetric', 'none'])
def test_qhyvit_choice_is_the_same_with_sorted_sums(overflow, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, 700, 12, generator=gen) * torch.linspace(0.1, 3, 12) + torch.linspace(-1, 2, 12)
          for _ in range(2)]
    kwargs = dict(bits=4, range_method='mse', search_steps=6, overflow=overflow)
    fast = calibrate(HybridQuantizer(**kwargs), *xs)
    assert fast._sorter is None  # released with the observer
    monkeypatch.setattr(hybrid_mod, 'SORTED_SCORER_MIN_VALUES', 10**9)
    slow = calibrate(HybridQuantizer(**kwargs), *xs)
    assert fast.choice['scheme'] == slow.choice['scheme'] and fast.choice['granularity'] == slow.choice['granularity']
    for name in ('scale', 'zero_point', 'qmin', 'qmax'):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    torch.testing.assert_close(fast.losses, slow.losses, rtol=1e-4, atol=1e-7)


def test_qhyvit_uses_the_sorted_sums_on_large_channels(monkeypatch):
    calls = []
    orig = SortedStepSums.sums
    monkeypatch.setattr(SortedStepSums, 'sums', lambda self, xs: calls.append(xs.shape) or orig(self, xs))
    x = torch.randn(2, 700, 12)
    calibrate(HybridQuantizer(4, range_method='mse', search_steps=4), x)
    assert calls == [(12, 1400)]
