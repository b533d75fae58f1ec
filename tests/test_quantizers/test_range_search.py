"""The shared range search: exact streaming quantiles, calibration passes, sampling option, bounded memory."""
from __future__ import annotations

import math

import pytest
import torch
from qtest_utils import _student_t

from quant_hooks.quantizers import (EmptyCalibrationError, QuantizerError, TailQuantiles, UniformQuantizer,
                                    build_quantizer, calibrate, run_calibration_passes)
from quant_hooks.quantizers import range_search as rs
from quant_hooks.quantizers.functional import (affine_params, fake_quant_affine, group_tail, strided_columns,
                                               values_beyond)
from quant_hooks.quantizers.granularity import PerChannel, PerTensor, PerToken
from quant_hooks.quantizers.range_search import TAIL_SLACK, RangeSearch

LEVELS = (0.999, 0.9999, 0.99999, 0.001, 0.0001, 0.00001, 0.5)


def _stream(tails, parts, valid=None):
    for i, p in enumerate(parts):
        tails.update(p, None if valid is None else valid[i])


@pytest.mark.parametrize('n_parts', [1, 7, 40])
@pytest.mark.parametrize('heavy_first', [False, True])
def test_one_long_row_streams_only_the_values_past_the_dropped_one(n_parts, heavy_first):
    """Per tensor (one group), a tensor adds only its values past the largest one dropped so far; the quantiles
    still equal torch.quantile, or the search says they are not exact (heavy values first push out needed ones)."""
    gen = torch.Generator().manual_seed(n_parts)
    x = _student_t((1, 120_000), gen)
    if heavy_first:
        x = x.sort(dim=1, descending=True).values
    levels = (0.999, 0.9999, 0.001)
    tails = TailQuantiles(levels)
    _stream(tails, x.chunk(n_parts, dim=1))
    ref = torch.quantile(x.double(), torch.tensor(levels, dtype=torch.float64), dim=1).T
    if tails.exact():
        torch.testing.assert_close(tails.quantiles().double(), ref, rtol=1e-6, atol=1e-7)
    else:
        assert heavy_first and n_parts > 1
        redo = TailQuantiles(levels, fixed_counts=tails.count)
        _stream(redo, x.chunk(n_parts, dim=1))
        torch.testing.assert_close(redo.quantiles().double(), ref, rtol=1e-6, atol=1e-7)
    assert heavy_first or tails.exact()


@pytest.mark.parametrize('largest', [True, False])
def test_values_beyond_a_threshold_are_every_such_value(largest):
    x = _student_t((100_003, ), torch.Generator().manual_seed(2))
    thr = torch.quantile(x[:50_000], 0.999 if largest else 0.001)
    want = x[x >= thr] if largest else x[x <= thr]
    got = values_beyond(x, thr, largest)
    assert torch.equal(got.sort().values, want.sort().values)


@pytest.mark.parametrize('n_parts', [1, 7, 40])
def test_tail_quantiles_equal_torch_quantile_over_the_whole_stream(n_parts):
    x = _student_t((5, 4000), torch.Generator().manual_seed(0))
    tails = TailQuantiles(LEVELS)
    _stream(tails, x.chunk(n_parts, dim=1))
    assert tails.exact()
    ref = torch.quantile(x.double(), torch.tensor(LEVELS, dtype=torch.float64), dim=1).T
    torch.testing.assert_close(tails.quantiles().double(), ref, rtol=1e-6, atol=1e-7)
    # the buffers hold a bounded share of the values: slack x (1 - p_min) x n per side, plus a constant
    per_side = math.ceil(TAIL_SLACK * (0.5 * 3999 + 2)) + 16  # the median level needs half of each row
    assert tails.retained() <= 2 * 5 * min(per_side, 4000)


@pytest.mark.parametrize('g,n,k', [(1, 200_003, 700), (3, 65_536, 100), (2, 5_000, 40), (4, 900, 3), (1, 64, 64)])
@pytest.mark.parametrize('largest', [True, False])
def test_group_tail_equals_a_full_topk(g, n, k, largest):
    """The block-maximum pre-filter returns exactly the ``k`` extreme values of each row, with heavy ties, infinite
    fill values (masked entries) and a last partial block."""
    gen = torch.Generator().manual_seed(n + k)
    x = _student_t((g, n), gen)
    x[:, ::7] = x[:, ::7].round()  # many exact ties among the extremes
    x[:, n // 3: n // 3 + n // 50] = math.inf if largest else -math.inf
    x[0, -1] = 1e6 if largest else -1e6  # the extreme value alone in the last partial block
    want = torch.topk(x, k, dim=1, largest=largest, sorted=True).values
    assert torch.equal(group_tail(x, k, largest), want)


def test_tail_quantiles_with_a_mask_use_only_the_valid_values():
    gen = torch.Generator().manual_seed(1)
    x = _student_t((3, 3000), gen)
    valid = torch.rand(3, 3000, generator=gen) > 0.3
    valid[2] = False  # a group without values gives 0
    tails = TailQuantiles((0.99, 0.01))
    _stream(tails, x.chunk(6, dim=1), valid.chunk(6, dim=1))
    got = tails.quantiles()
    for g in range(2):
        ref = torch.quantile(x[g][valid[g]].double(), torch.tensor([0.99, 0.01], dtype=torch.float64))
        torch.testing.assert_close(got[g].double(), ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(got[2], torch.zeros(2))


def test_a_stream_that_pushes_out_a_needed_value_is_detected_and_redone_in_one_more_pass():
    # the first tensor holds the largest values; then many small tensors: the final 0.999 quantile needs values
    # the growing buffer had to drop early on
    big = torch.linspace(100.0, 200.0, 1000)
    small = [torch.rand(1000, generator=torch.Generator().manual_seed(i)) for i in range(60)]
    parts = [big] + small
    tails = TailQuantiles((0.999, ))
    _stream(tails, [p[None] for p in parts])
    assert not tails.exact()
    q = calibrate(UniformQuantizer(8, range_method='percentile', percentiles=(0.999, 0.99)), *parts)
    assert q.describe()['passes'] == 3  # statistics, exact tails with the count known, scoring
    allx = torch.cat(parts).double()
    lo, hi = torch.quantile(allx, 0.001), torch.quantile(allx, 0.999)
    lo2, hi2 = torch.quantile(allx, 0.01), torch.quantile(allx, 0.99)
    scales = {float((h - l) / 255) for l, h in ((lo, hi), (lo2, hi2))}
    assert min(abs(float(q.scale) - s) / s for s in scales) < 1e-5


def test_per_batch_mean_mode_averages_each_tensors_quantiles():
    parts = [_student_t((1000, ), torch.Generator().manual_seed(i)) for i in range(5)]
    q = calibrate(UniformQuantizer(8, range_method='percentile', percentiles=(0.99, ),
                                   quantile_mode='per_batch_mean'), *parts)
    hi = sum(torch.quantile(p.double(), 0.99) for p in parts) / 5
    lo = sum(torch.quantile(p.double(), 0.01) for p in parts) / 5
    assert float(q.scale) == pytest.approx(float((hi - lo) / 255), rel=1e-5)
    exact = calibrate(UniformQuantizer(8, range_method='percentile', percentiles=(0.99, )), *parts)
    assert float(exact.scale) != pytest.approx(float(q.scale), rel=1e-4)


def test_options_are_checked_in_one_place():
    for bad in (8, 2.5, True, -1):
        with pytest.raises(QuantizerError, match='max_samples=.*allowed values are None'):
            UniformQuantizer(4, range_method='mse', max_samples=bad)
    with pytest.raises(QuantizerError, match="quantile_mode='median'.*allowed values"):
        build_quantizer(dict(type='log2', quantile_mode='median'))
    with pytest.raises(QuantizerError, match='search_steps'):
        build_quantizer(dict(type='twin_gelu', search_steps=0))
    with pytest.raises(QuantizerError, match='outlier_stats'):
        build_quantizer(dict(type='ppoq', outlier_stats='drop'))


def test_freeze_after_one_pass_of_a_two_pass_search_explains_what_to_do():
    q = UniformQuantizer(4, range_method='mse')
    q.site = 'blocks.0.fc1:input'
    assert q.calibration_passes == 2 and UniformQuantizer(4).calibration_passes == 1
    q.observing = True
    q(torch.randn(4, 8))
    with pytest.raises(QuantizerError, match=r'blocks\.0\.fc1.*needs 2 passes.*ran 1.*end_pass'):
        q.freeze()


def test_each_pass_must_see_the_same_data():
    q = UniformQuantizer(4, range_method='mse')
    q.observing = True
    q(torch.randn(4, 8))
    assert q.end_pass()
    q(torch.randn(2, 8))
    with pytest.raises(QuantizerError, match='pass 2 observed 16 values, the first pass 32'):
        q.end_pass()
    empty = UniformQuantizer(4, range_method='mse')
    with pytest.raises(EmptyCalibrationError, match='observed no data'):
        empty.end_pass()


def test_run_calibration_passes_freezes_one_pass_quantizers_first_and_keeps_their_float_path():
    x = torch.randn(3, 6, 8)
    one = UniformQuantizer(4)
    two = UniformQuantizer(4, range_method='percentile')
    disabled = UniformQuantizer(4, range_method='mse')
    disabled.enabled = False
    seen = []

    def run_once():
        seen.append((one.observing, one.enabled, torch.equal(one(x), x)))
        two(x)
        disabled(x)
        return 1

    assert run_calibration_passes([one, two, disabled], run_once) == (1, 2)
    assert seen == [(True, True, True), (False, False, True)]  # frozen and passing its input in pass 2
    assert one.calibrated and two.calibrated and disabled.calibrated
    assert one.enabled and two.enabled and not disabled.enabled and not two.observing

    counts = iter([2, 1])
    q = UniformQuantizer(4, range_method='mse')
    with pytest.raises(QuantizerError, match='pass 2 ran 1 batches and the first one 2'):
        run_calibration_passes([q], lambda: (q(x), next(counts))[1])
    assert run_calibration_passes([UniformQuantizer(4)], lambda: 0) == (0, 1)


def test_sampling_is_explicit_and_recorded():
    x = torch.randn(4, 100, 16)
    exact = calibrate(UniformQuantizer(4, range_method='mse'), *x)
    sampled = calibrate(UniformQuantizer(4, range_method='mse', max_samples=64), *x)
    assert exact.describe()['exact'] and exact.describe()['scored_values'] == x.numel()
    info = sampled.describe()
    assert not info['exact'] and info['max_samples'] == 64 and info['scored_values'] == 4 * 64


@pytest.mark.slow
def test_memory_of_one_site_on_64_inputs_of_197x3072_stays_bounded():
    """Values retained between inputs (tail buffers, per-group statistics, candidate errors), counted by the
    search, for the search whose memory grows with the data (exact percentiles); the per-input transient is a few
    copies of one input. Searches without quantiles retain ``O(groups × candidates)`` values whatever the data."""
    cfg = dict(type='uniform', bits=4, range_method='percentile')
    q = build_quantizer(cfg)
    n_inputs, shape = 64, (197, 3072)

    def run_once():
        for i in range(n_inputs):
            q(torch.randn(shape, generator=torch.Generator().manual_seed(i)))
        return n_inputs

    peak = 0
    q.reset()
    q.observing = True
    while True:
        run_once()
        peak = max(peak, q._search.peak_retained, q._search.retained())
        if not q.end_pass():
            break
    q.freeze()
    total = n_inputs * shape[0] * shape[1]
    # two sides of TAIL_SLACK·(1 - 0.999)·N + ~25 values, plus min, max, count and 3 candidate errors
    bound = 2 * (math.ceil(TAIL_SLACK * (0.001 * total + 2)) + 16) + 6
    assert peak <= bound, (peak, bound)
    assert peak < 0.009 * total  # 4·0.1 % per side
    print(f'\n{cfg}: retained at most {peak} values ({4 * peak / 2**20:.2f} MiB float32) for {total} observed; '
          f'bound {bound}')


def test_range_search_rejects_data_after_it_finished():
    s = RangeSearch(PerTensor())
    s.observe(torch.randn(4), 'q')
    assert not s.end_pass('q')
    with pytest.raises(QuantizerError, match='after its search finished'):
        s.observe(torch.randn(4), 'q')
    s2 = RangeSearch(PerChannel(-1))
    s2.observe(torch.randn(2, 4), 'q')
    with pytest.raises(QuantizerError, match='parameter shape'):
        s2.observe(torch.randn(2, 5), 'q')


@pytest.mark.parametrize('tile', [1 << 18, 2000, 300, 50])
@pytest.mark.parametrize('p,weighted', [(2.0, False), (2.0, True), (2.4, False)])
def test_affine_candidate_errors_equal_the_candidate_loop(tile, p, weighted, monkeypatch):
    """Tiles of rows x candidates (split unevenly, or rows longer than a tile) give the loop's numbers."""
    monkeypatch.setattr(rs, 'CANDIDATE_TILE', tile)
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(13, 77, generator=gen) * torch.rand(13, 1, generator=gen)
    weight = torch.rand(13, 77, generator=gen) if weighted else None
    alphas = torch.linspace(0.2, 1.0, 9)
    scale, zp = affine_params(xs.amin(1, keepdim=True) * alphas, xs.amax(1, keepdim=True) * alphas, 4, False)
    got = rs.affine_candidate_errors(xs, scale, zp, 0, 15, p, weight)
    for k in range(len(alphas)):
        d = (fake_quant_affine(xs, scale[:, k:k + 1], zp[:, k:k + 1], 0, 15) - xs).abs() ** p
        ref = (d * (1.0 if weight is None else weight)).sum(1)
        torch.testing.assert_close(got[:, k], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('granularity,shape,perm', [
    (PerChannel(-1), (5, 49, 3, 32), (0, 2, 1, 3)),  # heads split off the channels: no [G, S] view exists
    (PerChannel(1), (2, 8, 6, 6), (0, 1, 2, 3)),
    (PerChannel(0), (7, ), (0, )),
    (PerTensor(), (4, 9), (1, 0)),
])
def test_ranges_are_reduced_in_place_and_equal_the_grouped_ones(granularity, shape, perm):
    x = torch.randn(shape).permute(perm)
    lo, hi = granularity.extrema(x)
    grouped = granularity.grouped(x)
    assert torch.equal(lo.reshape(-1), grouped.amin(1)) and torch.equal(hi.reshape(-1), grouped.amax(1))
    search = RangeSearch(granularity)
    assert search.observe(x, 'q') is None and search.observe(x * 2, 'q') is None
    assert torch.equal(search.lo, torch.minimum(grouped.amin(1), 2 * grouped.amin(1)))
    assert torch.equal(search.hi, torch.maximum(grouped.amax(1), 2 * grouped.amax(1)))
    assert search.batches == 2 and torch.equal(search._pass_count, torch.full_like(search.lo, 2 * grouped.shape[1],
                                                                                    dtype=torch.long))


@pytest.mark.parametrize('granularity, make', [
    (PerTensor(), lambda x: x),
    (PerChannel(-1), lambda x: x),
    (PerChannel(-1), lambda x: x.permute(0, 2, 1, 3).reshape(2, 5, 6, 4)[..., :3]),  # a view that does not flatten
    (PerChannel(1), lambda x: x.permute(0, 3, 1, 2)),
    (PerToken(dynamic_=False, token_axis=-2), lambda x: x.transpose(1, 2)),
])
def test_sampled_scoring_takes_the_strided_columns_of_the_grouped_view(granularity, make):
    """The score stage with ``max_samples`` gathers its sample from the tensor itself; it equals the strided columns of
    the ``[G, S]`` view (``strided_columns(grouped(x))``), whatever the layout."""
    x = make(torch.randn(2, 6, 5, 4))
    search = RangeSearch(granularity, score='after_stats', max_samples=16)
    search.observe(x, 'q')
    search.end_pass('q')
    got, weight = search.observe(x, 'q')
    full = granularity.grouped(x).float()
    want = strided_columns(full, max(16, 16 // full.shape[0]))
    assert weight is None and torch.equal(got, want)
    assert search.scored_values == want.numel()
    search.end_pass('q')  # raises unless the pass counted every value of x, as the first pass did


def test_grouped_columns_equal_the_columns_of_the_grouped_view():
    x = torch.randn(3, 4, 5).transpose(0, 2)
    idx = torch.tensor([0, 2, 7, 11])
    for g in (PerTensor(), PerChannel(0), PerChannel(-1), PerChannel(1), PerToken(dynamic_=False, token_axis=1)):
        assert torch.equal(g.grouped_columns(x, idx), g.grouped(x)[:, idx]), g
    v = torch.randn(6)
    assert torch.equal(PerChannel(0).grouped_columns(v, torch.tensor([0])), v[:, None])
