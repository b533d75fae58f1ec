"""The histogram scorer of per-tensor candidates gives the sums of quantizing every value with every candidate."""
import pytest
import torch

from quant_hooks.quantizers import uniform as uniform_mod
from quant_hooks.quantizers.functional import affine_params, fake_quant_affine, uniform_qrange
from quant_hooks.quantizers.step_scorer import StepErrorScorer, float_key, key_float
from quant_hooks.quantizers.uniform import UniformQuantizer

from qtest_utils import calibrate


def calibrate_keeping_scores(q, *xs):
    """Calibrate ``q`` on ``xs``; returns (q, its candidate errors summed over every pass, read before freeze)."""
    q.observing = True
    while True:
        for x in xs:
            q(x)
        if not q.end_pass():
            break
    scores = q._search.scores.clone()
    q.freeze()
    return q, scores


def heavy_tailed(n, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen)
    x[torch.randperm(n, generator=gen)[:n // 200]] *= 30.0
    x[:5] = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 1e-30])
    return x


def uniform_candidates(x, bits, symmetric, alphas):
    lo, hi = float(x.min()), float(x.max())
    a = torch.tensor(alphas)
    scale, zp = affine_params(lo * a, hi * a, bits, symmetric)
    qmin, qmax = uniform_qrange(bits, symmetric)
    levels = (torch.arange(qmin, qmax + 1, dtype=torch.float32)[None, :] - zp[:, None]) * scale[:, None]

    def quantize(v, idx):
        return fake_quant_affine(v, scale[idx, None], zp[idx, None], qmin, qmax)

    return quantize, levels, lo, hi


def reference(x, quantize, n_cand):
    """Every value quantized by every candidate (float32, as the forward), error summed in float64."""
    return torch.stack([((quantize(x[None], torch.tensor([c]))[0].double() - x.double())**2).sum()
                        for c in range(n_cand)])


def test_float_keys_order_like_the_floats_and_invert():
    x = torch.tensor([-3e38, -2.0, -1.0, -1e-40, -0.0, 0.0, 1e-40, 1.0, 1.5, 3e38])
    k = float_key(x)
    assert bool((k[1:] > k[:-1]).all())
    assert torch.equal(key_float(k.long()).view(torch.int32), x.view(torch.int32))


@pytest.mark.parametrize('bins', [1 << 8, 1 << 20])
@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('bits', [2, 4, 8])
def test_errors_equal_quantizing_every_value_with_every_candidate(bits, symmetric, bins):
    x = heavy_tailed(200_000, bits)
    alphas = torch.linspace(0.01, 1.2, 37).tolist()
    quantize, levels, lo, hi = uniform_candidates(x, bits, symmetric, alphas)
    scorer = StepErrorScorer(quantize, levels, lo, hi, bins=bins)
    got = scorer.errors(x[:120_000]) + scorer.errors(x[120_000:])
    ref = reference(x, quantize, len(alphas))
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    assert scorer.values_seen == x.numel()
    info = scorer.info()
    assert info == dict(values=x.numel(), cells=len(scorer.all_thr) + 1, bins=scorer.lookup.nbins,
                        window=scorer.lookup.window)
    assert info['bins'] <= bins
    assert int(got.argmin()) == int(ref.argmin())


def test_a_function_that_is_not_a_step_function_of_its_levels_is_refused():
    x = heavy_tailed(1000, 0)
    quantize, levels, lo, hi = uniform_candidates(x, 4, False, [0.5, 1.0])
    with pytest.raises(ValueError, match='level'):
        StepErrorScorer(quantize, levels * 1.001, lo, hi)
    with pytest.raises(ValueError, match='increasing|level'):
        StepErrorScorer(lambda v, idx: quantize(-v, idx), levels, lo, hi)


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('bits', [4, 8])
def test_omse_search_picks_the_same_alpha_with_and_without_the_histogram(bits, symmetric, monkeypatch):
    xs = [heavy_tailed(70_000, s).reshape(70, 1000) for s in range(3)]
    fast, fast_scores = calibrate_keeping_scores(UniformQuantizer(bits, symmetric=symmetric, range_method='mse'), *xs)
    assert fast.search_info['histogram_scored']['values'] == 3 * 70_000
    monkeypatch.setattr(uniform_mod, 'step_scorer_applies', lambda *a, **k: False)
    slow, slow_scores = calibrate_keeping_scores(UniformQuantizer(bits, symmetric=symmetric, range_method='mse'), *xs)
    assert 'histogram_scored' not in slow.search_info
    assert torch.equal(fast.scale, slow.scale) and torch.equal(fast.zero_point, slow.zero_point)
    x = torch.cat([t.reshape(-1) for t in xs])
    quantize, _, _, _ = uniform_candidates(x, bits, symmetric, fast.alphas)
    ref = reference(x, quantize, len(fast.alphas))
    torch.testing.assert_close(fast_scores[0], ref, rtol=1e-9, atol=1e-9)  # float64 sums
    torch.testing.assert_close(slow_scores[0], ref, rtol=1e-4, atol=1e-4)  # float32 sums per tensor


def test_values_outside_the_calibrated_range_are_scored_one_candidate_at_a_time():
    x = heavy_tailed(100_000, 1)
    q = UniformQuantizer(4, range_method='mse')
    q.observing = True
    q(x)
    q.end_pass()
    q(x * 1.5)  # not what the first pass saw: the histogram does not cover it
    assert q._scorer and q._scorer.errors(x * 1.5) is None
    assert q._scorer.values_seen == 0


def test_twin_gelu_search_picks_the_same_alpha_with_and_without_the_histogram(monkeypatch):
    from quant_hooks.quantizers import twin as twin_mod
    from quant_hooks.quantizers.twin import TwinGeluQuantizer
    xs = [torch.nn.functional.gelu(heavy_tailed(70_000, s)).reshape(70, 1000) for s in range(3)]
    xs[0][0, :3] = torch.tensor([-0.0, 0.0, -0.1])
    fast, fast_scores = calibrate_keeping_scores(TwinGeluQuantizer(4), *xs)
    assert fast.search_info['histogram_scored']['values'] == 3 * 70_000
    monkeypatch.setattr(twin_mod, 'step_scorer_applies', lambda *a, **k: False)
    slow, slow_scores = calibrate_keeping_scores(TwinGeluQuantizer(4), *xs)
    assert 'histogram_scored' not in slow.search_info
    assert torch.equal(fast.scale_pos, slow.scale_pos)
    torch.testing.assert_close(fast_scores, slow_scores, rtol=1e-4, atol=0)


def test_the_reused_buffers_are_released_when_the_search_ends():
    from quant_hooks.quantizers import workspace
    q = UniformQuantizer(4, range_method='mse')
    q.observing = True
    x = heavy_tailed(100_000, 2)
    q(x)
    q.end_pass()
    q(x)
    assert workspace._WORKSPACE
    q.end_pass()
    q.freeze()
    assert not workspace._WORKSPACE


@pytest.mark.parametrize('bits', [4, 8])
def test_twin_softmax_search_scores_its_non_monotone_candidates_by_their_codes(bits, monkeypatch):
    """The twin output drops at the split; the steps are found from the codes and the sums stay exact."""
    from quant_hooks.quantizers import twin as twin_mod
    from quant_hooks.quantizers.twin import TwinSoftmaxQuantizer
    gen = torch.Generator().manual_seed(bits)
    xs = [torch.softmax(torch.randn(64, 49, 49, generator=gen) * 3, dim=-1) for _ in range(2)]
    fast, fast_scores = calibrate_keeping_scores(TwinSoftmaxQuantizer(bits), *xs)
    assert fast.search_info['histogram_scored']['values'] == 2 * xs[0].numel()
    monkeypatch.setattr(twin_mod, 'step_scorer_applies', lambda *a, **k: False)
    slow, slow_scores = calibrate_keeping_scores(TwinSoftmaxQuantizer(bits), *xs)
    assert torch.equal(fast.split, slow.split)
    torch.testing.assert_close(fast_scores, slow_scores, rtol=1e-4, atol=0)
    ref = torch.stack([sum(((slow._fq(x.reshape(-1), torch.tensor(2.0**-i)).double() - x.reshape(-1).double())**2).sum()
                           for x in xs) for i in slow.split_exponents])
    torch.testing.assert_close(fast_scores[0], ref, rtol=1e-9, atol=1e-12)


def test_step_thresholds_find_the_first_key_of_every_step():
    """Against a scan of every key: switches at the guess, a few keys away, far outside the first bracket, at the
    bottom of the range, and never."""
    from quant_hooks.quantizers.step_scorer import float_key, key_float, step_thresholds
    g = torch.Generator().manual_seed(0)
    levels = torch.sort(torch.randn(6, 5, generator=g) * 4, dim=1).values
    mid = float_key(((levels[:, 1:].double() + levels[:, :-1].double()) / 2).float().contiguous()).long()
    klo, khi = float_key(torch.tensor([-100.0]))[0].long(), float_key(torch.tensor([100.0]))[0].long()
    shifts = [[0, 1, -1, 2], [-8, 7, -9, 8], [300, -40000, 5, 0], [0, 0, 0, 0], [0, 0, 0, 0], [3, -2, 1, -3]]
    truth = mid + torch.tensor(shifts)
    truth[3, 0] = klo - 7  # below the range: the first key of the range
    truth[4, 3] = khi + 99  # never reached inside the range

    def reached(keys):
        return keys >= truth

    expect = truth.clamp(int(klo), int(khi) + 1)
    assert torch.equal(step_thresholds(reached, levels, klo, khi), expect)
    truth = mid + torch.tensor([[0, 1, -1, 2], [-8, 7, -3, 5]] * 3)  # every switch within the first bracket
    calls = []
    assert torch.equal(step_thresholds(lambda k: calls.append(1) or reached(k), levels, klo, khi), truth)
    assert len(calls) == 2 + 4  # the bracket check, then log2(16) steps
    # a predicate that is a real quantizer: the smallest float whose code reaches the next level
    scale = torch.tensor(0.37)
    lv = (torch.arange(-8, 8, dtype=torch.float32) * scale)[None]
    thr = step_thresholds(lambda k: torch.round(key_float(k) / scale) * scale >= lv[:, 1:], lv,
                          float_key(torch.tensor([-10.0])).long()[0], float_key(torch.tensor([10.0])).long()[0])
    below = key_float(thr - 1)
    assert torch.all(torch.round(key_float(thr) / scale) * scale >= lv[:, 1:])
    assert torch.all(torch.round(below / scale) * scale < lv[:, 1:])


@pytest.mark.parametrize('max_bins', [1 << 4, 1 << 8, 1 << 18])
def test_cell_lookup_counts_the_thresholds_at_or_below_every_key(max_bins):
    """The cell of a key is the number of thresholds at or below it (a scan in the test), for keys in every bin,
    below and above the bins, with clustered thresholds and thresholds outside the value range."""
    from quant_hooks.quantizers.step_scorer import LOOKUP_WINDOW, lookup_bins
    gen = torch.Generator().manual_seed(max_bins)
    values = torch.cat([torch.randn(300, generator=gen), torch.randn(40, generator=gen) * 1e-3 + 0.7,
                        torch.tensor([0.0, -0.0, 1e-40, -3.0, 3.0, 50.0, -50.0])])
    klo, khi = int(float_key(torch.tensor([-4.0]))[0]), int(float_key(torch.tensor([4.0]))[0])
    thresholds = torch.unique(float_key(values).long())
    lookup = lookup_bins(thresholds, klo, khi, max_bins)
    assert lookup.nbins <= max_bins
    assert lookup.window <= LOOKUP_WINDOW or 2 * lookup.nbins > max_bins
    keys = torch.cat([torch.randint(klo, khi + 1, (20000, ), generator=gen), thresholds.clamp(klo, khi),
                      thresholds.clamp(klo, khi) - 1, torch.tensor([klo, khi])]).clamp(klo, khi).to(torch.int32)
    got = lookup.cells(keys, out=torch.empty_like(keys))
    expected = (thresholds[None, :] <= keys.long()[:, None]).sum(1)
    assert torch.equal(got.long(), expected)


def test_cell_lookup_without_thresholds_inside_the_range():
    from quant_hooks.quantizers.step_scorer import lookup_bins
    thresholds = torch.tensor([-100, 5, 10_000])
    lookup = lookup_bins(thresholds, 0, 1000)
    keys = torch.arange(0, 1001, dtype=torch.int32)
    assert torch.equal(lookup.cells(keys, out=torch.empty_like(keys)).long(), (keys >= 5).long() + 1)


@pytest.mark.parametrize('symmetric', [False, True])
@pytest.mark.parametrize('bits', [2, 4, 8])
def test_affine_first_keys_are_where_each_step_of_the_quantizer_starts(bits, symmetric):
    """The arithmetic first key of every step equals the step search over the quantizer itself (scales over six
    decades, powers of two among them, grids of shrunk ranges, zero-points inside and outside the code range)."""
    from quant_hooks.quantizers.step_scorer import affine_first_keys, step_thresholds
    gen = torch.Generator().manual_seed(bits)
    g, k = 24, 17
    lo = -torch.rand(g, generator=gen) * torch.logspace(-3, 3, g)
    hi = torch.rand(g, generator=gen) * torch.logspace(-3, 3, g) + 1e-3
    lo[0] = hi[0] * 0.25  # a range above zero: the zero-point lies outside the codes
    alphas = torch.linspace(0.3, 1.2, k)
    scale, zp = affine_params(lo[:, None] * alphas, hi[:, None] * alphas, bits, symmetric)
    scale[:, ::3] = 2.0 ** scale[:, ::3].log2().round()  # powers of two: the quotient x / Δ is exact there
    qmin, qmax = uniform_qrange(bits, symmetric)
    n = 2**bits
    levels = (torch.arange(qmin, qmax + 1, dtype=torch.float32) - zp[..., None]) * scale[..., None]
    klo = float_key(lo.float() + 0.0).long()
    khi = float_key(hi.float() + 0.0).long()

    def reached(keys):
        return fake_quant_affine(key_float(keys), scale[..., None], zp[..., None], qmin, qmax) >= levels[..., 1:]

    expected = step_thresholds(reached, levels, klo, khi)
    keys = affine_first_keys(scale, zp, torch.full_like(scale, qmin), torch.full_like(scale, qmax), n)
    assert torch.equal(torch.minimum(torch.maximum(keys, klo[:, None, None]), khi[:, None, None] + 1), expected)
