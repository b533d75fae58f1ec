"""Per-channel step sums (lookup cells and binary search) equal quantizing every value with every candidate."""
import pytest
import torch

from quant_hooks.quantizers import channel_scorer as scorer_mod
from quant_hooks.quantizers import hybrid as hybrid_mod
from quant_hooks.quantizers.functional import affine_params, fake_quant_affine
from quant_hooks.quantizers.step_scorer import key_float
from quant_hooks.quantizers.hybrid import HybridQuantizer
from quant_hooks.quantizers.channel_scorer import ChannelStepSums

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
    sorter = ChannelStepSums(lambda v, k: fake_quant_affine(v, s[:, k, None], z[:, k, None], qn, qx), levels, lo, hi)
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
        ChannelStepSums(lambda v, k: fake_quant_affine(v, s[:, k, None], z[:, k, None], 0, 15), levels * 1.01,
                       x.amin(1), x.amax(1))


@pytest.mark.parametrize('overflow', ['clamp_range', 'symmetric', 'none'])
def test_qhyvit_choice_is_the_same_with_channel_sums(overflow, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, 700, 12, generator=gen) * torch.linspace(0.1, 3, 12) + torch.linspace(-1, 2, 12)
          for _ in range(2)]
    kwargs = dict(bits=4, range_method='mse', search_steps=6, overflow=overflow)
    fast = calibrate(HybridQuantizer(**kwargs), *xs)
    assert fast._scorer is None  # released with the observer
    monkeypatch.setattr(hybrid_mod, 'CHANNEL_SCORER_MIN_VALUES', 10**9)
    slow = calibrate(HybridQuantizer(**kwargs), *xs)
    assert fast.choice['scheme'] == slow.choice['scheme'] and fast.choice['granularity'] == slow.choice['granularity']
    for name in ('scale', 'zero_point', 'qmin', 'qmax'):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    torch.testing.assert_close(fast.losses, slow.losses, rtol=1e-4, atol=1e-7)


def test_qhyvit_uses_the_channel_sums_on_large_channels(monkeypatch):
    calls = []
    orig = ChannelStepSums.add
    monkeypatch.setattr(ChannelStepSums, 'add', lambda self, xs: calls.append(xs.shape) or orig(self, xs))
    x = torch.randn(2, 700, 12)
    calibrate(HybridQuantizer(4, range_method='mse', search_steps=4), x, x[:, :20])
    assert calls == [(12, 1400)]  # 40 values per channel: scored candidate by candidate


def test_sums_added_over_several_tensors_are_taken_once():
    x = channels(5, 3000, 7)
    scorer, _, _ = _affine_candidates(x, 4, torch.tensor([0.6, 1.0]))
    whole = scorer.sums(x)
    assert scorer.add(x[:, :1000]) and scorer.add(x[:, 1000:])
    assert not scorer.add(x[:, :10] * 3)  # outside the ranges: nothing added
    parts = scorer.take()
    assert torch.equal(parts[0], whole[0])
    for a, b in zip(parts[1:], whole[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert scorer.take() is None


def _affine_candidates(x, bits, alphas, symmetric=False):
    lo, hi = x.amin(1), x.amax(1)
    # ranges widened to hold 0, as Q-HyViT's clamp_range does (a range of width 0 would give equal levels)
    s, z = affine_params(lo.clamp(max=0)[:, None] * alphas, hi.clamp(min=0)[:, None] * alphas, bits, symmetric)
    qn, qx = (-(2**(bits - 1)), 2**(bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    levels = (torch.arange(qn, qx + 1, dtype=torch.float32) - z[..., None]) * s[..., None]
    scorer = ChannelStepSums(lambda v, k: fake_quant_affine(v, s[:, k, None], z[:, k, None], qn, qx), levels, lo, hi)
    q = fake_quant_affine(x[:, None, :].expand(-1, len(alphas), -1), s[..., None], z[..., None], qn, qx)
    return scorer, levels, q


def test_values_next_to_every_boundary_near_zero_and_in_odd_ranges_land_in_their_step():
    """Values one float32 step either side of every candidate's boundary, signed zeros, subnormals, a constant
    channel, a narrow range far from zero and a subnormal-wide range: the lookup cells and the binary search
    together give the steps the quantizer gives."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4, 3000, generator=gen)
    base[0, :6] = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1e-39, -1e-39])
    rows = [base[0], base[1] * 1e-3 + 1000.0, base[2].abs() * 1e-42, torch.full((3000, ), 0.75), base[3] * 5]
    x = torch.stack(rows)
    alphas = torch.tensor([0.5, 0.61, 0.8, 1.0])
    scorer, levels, _ = _affine_candidates(x, 4, alphas)
    # add the neighbours of every boundary that lies inside each channel's range
    thr = key_float(scorer.bounds[:, :scorer.group_stride])
    extra = torch.stack([torch.nextafter(thr, thr - 1), thr, torch.nextafter(thr, thr + 1)], -1).reshape(len(rows), -1)
    inside = (extra >= x.amin(1, keepdim=True)) & (extra <= x.amax(1, keepdim=True))
    x = torch.cat([x, torch.where(inside, extra, x[:, :1])], dim=1)
    scorer, levels, q = _affine_candidates(x, 4, alphas)
    n, s1, _ = scorer.sums(x)
    hit = q[..., None] == levels[:, :, None, :]
    assert torch.equal(n, hit.sum(2).double())
    torch.testing.assert_close(s1, (hit * x.double()[:, None, :, None]).sum(2), rtol=1e-12, atol=1e-300)
    info = scorer.info()
    assert 0 < info['searched'] < info['values']  # both the cells and the binary search placed values
    # the constant and the subnormal-wide channels are searched value by value
    assert bool((scorer.table.view(len(rows), -1)[2:4] < 0).all())


@pytest.mark.parametrize('bits', [4, 8])
def test_most_values_are_placed_by_the_lookup_cells(bits):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(16, 20000, generator=gen) * torch.rand(16, 1, generator=gen) * 4
    scorer, levels, q = _affine_candidates(x, bits, torch.linspace(0.5, 1.0, 20))
    n, _, _ = scorer.sums(x)
    step = torch.searchsorted(levels.contiguous(), q.contiguous())  # q is one of the levels: its index
    assert torch.equal(levels.gather(2, step), q)
    assert torch.equal(n, torch.zeros_like(n).scatter_add_(2, step, torch.ones_like(step, dtype=n.dtype)))
    info = scorer.info()
    assert info['searched'] < 0.25 * info['values'], info


def test_qhyvit_records_what_the_channel_sums_scored():
    q = calibrate(HybridQuantizer(4, range_method='mse', search_steps=4), torch.randn(2, 700, 12))
    info = q.describe()['channel_scored']
    assert info['values'] == 12 * 1400 and 0 <= info['searched'] <= info['values'] and info['cells'] >= 1024


def test_candidates_shared_by_every_channel_give_the_same_sums_when_found_once():
    x = channels(7, 4000, 11)
    lo, hi = x.amin(1), x.amax(1)
    alphas = torch.tensor([0.5, 0.75, 1.0])
    # channel-wise ranges, then the layer-wise range (the same for every channel)
    s_c, z_c = affine_params(lo.clamp(max=0)[:, None] * alphas, hi.clamp(min=0)[:, None] * alphas, 4, False)
    s_t, z_t = affine_params(lo.min().clamp(max=0) * alphas, hi.max().clamp(min=0) * alphas, 4, False)
    s = torch.cat([s_c, s_t.expand(7, -1)], 1)
    z = torch.cat([z_c, z_t.expand(7, -1)], 1)
    levels = (torch.arange(16, dtype=torch.float32) - z[..., None]) * s[..., None]
    shared = torch.tensor([False] * 3 + [True] * 3)
    calls = []

    def quantize(v, k):
        calls.append(v.shape[0])
        return fake_quant_affine(v, s[:v.shape[0], k, None], z[:v.shape[0], k, None], 0, 15)

    once = ChannelStepSums(quantize, levels, lo, hi, shared)
    assert 1 in calls and 7 in calls
    every = ChannelStepSums(quantize, levels, lo, hi)
    assert torch.equal(once.below_index, every.below_index)
    a, b = once.sums(x), every.sums(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    q = fake_quant_affine(x[:, None, :].expand(-1, 6, -1), s[..., None], z[..., None], 0, 15)
    assert torch.equal(a[0], (q[..., None] == levels[:, :, None, :]).sum(2).double())


def test_channel_last_values_give_the_same_sums():
    x = channels(9, 2500, 5)
    scorer, _, _ = _affine_candidates(x, 4, torch.tensor([0.7, 1.0]))
    x_last = x.t().contiguous().t()  # [G, S] view of [S, G] memory, as channel-last activations arrive
    assert not x_last.is_contiguous()
    a, b = scorer.sums(x), scorer.sums(x_last)
    assert torch.equal(a[0], b[0])
    for u, v in zip(a[1:], b[1:]):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    assert torch.equal(scorer.buckets(x), scorer.buckets(x_last))


def test_searches_with_too_many_boundaries_are_scored_candidate_by_candidate(monkeypatch):
    x = torch.randn(2, 700, 12)
    monkeypatch.setattr(hybrid_mod, 'MAX_BOUNDARIES', 12 * 16 * 15 - 1)  # 12 channels, 16 candidates, 15 steps
    q = calibrate(HybridQuantizer(4, range_method='mse', search_steps=4), x)
    assert 'channel_scored' not in q.describe()
    monkeypatch.setattr(hybrid_mod, 'MAX_BOUNDARIES', 12 * 16 * 15)
    fast = calibrate(HybridQuantizer(4, range_method='mse', search_steps=4), x)
    assert fast.describe()['channel_scored']['values'] == 12 * 1400
    for name in ('scale', 'zero_point', 'qmin', 'qmax'):
        assert torch.equal(getattr(fast, name), getattr(q, name)), name


def test_bucket_counts_widen_before_they_could_overflow():
    x = channels(3, 2000, 2)
    scorer, _, _ = _affine_candidates(x, 4, torch.tensor([1.0]))
    scorer.add(x)
    assert scorer._count.dtype == torch.int32
    scorer._held = 2**31 - 1000  # as after 2^31 values per channel
    scorer.add(x)
    assert scorer._count.dtype == torch.int64
    n, _, _ = scorer.take()
    assert torch.equal(n, 2 * scorer.sums(x)[0])


@pytest.mark.parametrize('rows,values', [(3, 300), (16, 1 << 16), (5, 7)])
def test_tiles_of_any_size_give_the_same_sums(rows, values, monkeypatch):
    """Tiles that split the groups and the values unevenly (and a channel-last view) sum to the reference."""
    monkeypatch.setattr(scorer_mod, 'TILE_ROWS', rows)
    monkeypatch.setattr(scorer_mod, 'TILE_VALUES', values)
    x = channels(7, 1001, 4)
    scorer, levels, q = _affine_candidates(x, 4, torch.tensor([0.55, 0.8, 1.0]))
    hit = q[..., None] == levels[:, :, None, :]
    for xs in (x, x.t().contiguous().t()):
        n, s1, s2 = scorer.sums(xs)
        assert torch.equal(n, hit.sum(2).double())
        torch.testing.assert_close(s1, (hit * x.double()[:, None, :, None]).sum(2), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s2, (x.double()**2).sum(1), rtol=1e-12, atol=0)


def test_values_of_cut_cells_are_searched_in_a_short_window():
    """A cell that boundaries may cut is searched among a window of a few boundaries after those certainly below
    it, whatever the number of boundaries of the group."""
    x = torch.randn(4, 20000, generator=torch.Generator().manual_seed(8))
    scorer, levels, q = _affine_candidates(x, 8, torch.linspace(0.3, 1.0, 12))
    info = scorer.info()
    assert info['boundaries'] > 1000 and 1 <= info['window'] <= 16, info
    n, _, _ = scorer.sums(x)
    assert scorer.info()['searched'] > 0
    step = torch.searchsorted(levels.contiguous(), q.contiguous())  # q is one of the levels: its index
    assert torch.equal(n, torch.zeros_like(n).scatter_add_(2, step, torch.ones_like(step, dtype=n.dtype)))


def test_nan_is_outside_every_range():
    x = channels(3, 500, 1)
    scorer, _, _ = _affine_candidates(x, 4, torch.tensor([1.0]))
    x[1, 10] = float('nan')
    assert scorer.sums(x) is None


def test_expected_first_keys_give_the_same_boundaries_and_a_wrong_guess_is_searched():
    from quant_hooks.quantizers.step_scorer import affine_first_keys
    x = channels(7, 3000, 11)
    lo, hi = x.amin(1), x.amax(1)
    alphas = torch.tensor([0.4, 0.8, 1.0])
    s, z = affine_params(lo[:, None] * alphas, hi[:, None] * alphas, 4, False)
    levels = (torch.arange(16, dtype=torch.float32) - z[..., None]) * s[..., None]
    calls = []

    def quantize(v, k):
        calls.append(1)
        return fake_quant_affine(v, s[:, k, None], z[:, k, None], 0, 15)

    searched = ChannelStepSums(quantize, levels, lo, hi)
    searched_calls, calls[:] = len(calls), []
    first = affine_first_keys(s, z, torch.zeros_like(s), torch.full_like(s, 15), 16)
    guessed = ChannelStepSums(quantize, levels, lo, hi, first_keys=first)
    assert len(calls) == 2 < searched_calls  # the check alone
    assert torch.equal(guessed.below_index, searched.below_index)
    assert all(torch.equal(a, b) for a, b in zip(guessed.sums(x), searched.sums(x)))
    wrong = first.clone()
    wrong[3, 1, 7] += 1
    off = ChannelStepSums(quantize, levels, lo, hi, first_keys=wrong)
    assert torch.equal(off.below_index, searched.below_index)
