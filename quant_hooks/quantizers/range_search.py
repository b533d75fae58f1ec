"""The one range / candidate search shared by every calibrated quantizer.

A :class:`RangeSearch` turns a stream of calibration tensors into per-group statistics and candidate errors, over
*all* observed values by default, with memory that does not grow with the number of tensors beyond the exact
quantile tails (see below). It runs in stages, one pass over the calibration data each:

1. ``stats``: per group min, max and count, and the quantile levels the quantizer asks for. With
   ``quantile_mode='all'`` (default) the quantiles are those of all calibration values together, exact, read
   from streaming top-k / bottom-k buffers (:class:`TailQuantiles`); with ``'per_batch_mean'`` they are the mean
   over tensors of each tensor's quantiles (this project's former semantics, kept as an option). Candidates
   that are known before any data (``score='with_stats'``) are scored in this pass too.
2. ``tails`` (rare): the streaming buffers grow with the count seen so far, so a stream whose first tensors
   hold most of the largest values can push out a value that the final quantile needs; that is detected
   exactly (the largest dropped value is kept) and the quantiles are then recomputed in one more pass with the
   final count known, where a fixed-size top-k is exact.
3. ``score`` (``score='after_stats'``): the quantizer builds its candidates from the statistics and the search
   hands it every observed tensor again; the quantizer returns the error of each candidate and the search sums
   them over all values.

Memory: the tail buffers keep, per group and side, at most ``4·(1 - p)·n + 25`` values, ``p`` the level nearest
the median and ``n`` the group's count so far (0.4 % of the values per side for ``p = 0.999``); everything else
is ``O(groups × candidates)``. The transient cost of one tensor is a few copies of that tensor.

``max_samples`` (default ``None``: exact) is the explicit sampling option: an integer bounds the values of each
tensor that are scored (an evenly strided, deterministic subset, all groups together); statistics stay exact.
"""
from __future__ import annotations

import math

import torch

from .errors import QuantizerError, check_choice
from .functional import (fake_quant_affine, group_quantiles, group_tail, masked_group_quantile, strided_column_index,
                         strided_columns, values_beyond)
from .granularity import Granularity

QUANTILE_MODES = ('all', 'per_batch_mean')
SCORE_MODES = ('none', 'with_stats', 'after_stats')
#: slack of the streaming tail buffers over the size the quantiles need at the current count (2 left the
#: image input and two attention-probability sites of Swin-T needing the extra ``tails`` pass on 8 COCO images)
TAIL_SLACK = 4.0


def check_max_samples(max_samples) -> int | None:
    """``None`` (score every value) or an integer >= 16 (score a strided sample of at most that many values per
    observed tensor)."""
    if max_samples is None:
        return None
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 16:
        raise QuantizerError(f'max_samples={max_samples!r} is invalid: allowed values are None (every value is '
                             'scored, exact) or integers >= 16 (a strided sample of each observed tensor)')
    return max_samples


def check_quantile_mode(mode) -> str:
    return check_choice(mode, 'quantile_mode', QUANTILE_MODES)


def _rank_floor(levels: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``floor(q·(n - 1))`` per group and level (float64, as ``torch.quantile``'s linear interpolation)."""
    return (levels[None, :] * (n[:, None] - 1).clamp_min(0).double()).floor().long()


class TailQuantiles:
    """Exact per-group quantiles of a stream, from the largest and smallest values only.

    Levels ``>= 0.5`` are read from a buffer of the largest values, the others from one of the smallest. While
    the final count is unknown the buffers hold ``TAIL_SLACK`` times what the current count needs; the largest
    value pushed out of each buffer is kept (a later value past it ranks after it and is not added), so
    :meth:`exact` tells whether the result is exact. With
    ``fixed_counts`` (the final per-group counts, from an earlier pass) the buffers have the final size and are
    exact by construction.

    Args:
        levels: quantile levels in [0, 1].
        fixed_counts: final per-group counts, ``[G]``, or None.
    """

    def __init__(self, levels, fixed_counts: torch.Tensor | None = None):
        self.levels = torch.tensor([float(q) for q in levels], dtype=torch.float64)
        self.upper = self.levels[self.levels >= 0.5]
        self.lower = self.levels[self.levels < 0.5]
        self.fixed_counts = fixed_counts
        self.count = None
        self.top = self.bottom = None
        self.dropped_top = self.dropped_bottom = None

    def _need_upper(self, n):
        """How many of the largest values the upper levels read, for ``n`` values (int or ``[G]`` tensor)."""
        if not len(self.upper):
            return n * 0
        nt = torch.as_tensor(n, dtype=torch.long)
        need = nt - (float(self.upper.min()) * (nt - 1).clamp_min(0).double()).floor().long()
        need = torch.where(nt > 0, need, torch.zeros_like(need))
        return int(need) if not isinstance(n, torch.Tensor) else need

    def _need_lower(self, n):
        """How many of the smallest values the lower levels read, for ``n`` values (int or ``[G]`` tensor)."""
        if not len(self.lower):
            return n * 0
        nt = torch.as_tensor(n, dtype=torch.long)
        last = (nt - 1).clamp_min(0)
        need = torch.minimum((float(self.lower.max()) * last.double()).floor().long() + 1, last) + 1
        need = torch.where(nt > 0, need, torch.zeros_like(need))
        return int(need) if not isinstance(n, torch.Tensor) else need

    def _capacity(self, need: int, n: int) -> int:
        if self.fixed_counts is not None:
            return need
        return min(n, math.ceil(TAIL_SLACK * need) + 16) if need else 0

    def update(self, xg: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add a ``[G, S]`` tensor; ``valid`` marks the values that count (others are ignored)."""
        counts = torch.full((xg.shape[0], ), xg.shape[1], dtype=torch.long, device=xg.device) if valid is None \
            else valid.sum(1)
        self.count = counts if self.count is None else self.count + counts
        n = int((self.fixed_counts if self.fixed_counts is not None else self.count).max())
        if len(self.upper):
            xt = xg if valid is None else xg.masked_fill(~valid, -math.inf)
            k = self._capacity(self._need_upper(n), n)
            self.top, self.dropped_top = self._merge(self.top, xt, k, self.dropped_top, largest=True)
        if len(self.lower):
            xb = xg if valid is None else xg.masked_fill(~valid, math.inf)
            k = self._capacity(self._need_lower(n), n)
            self.bottom, self.dropped_bottom = self._merge(self.bottom, xb, k, self.dropped_bottom, largest=False)

    @staticmethod
    def _merge(buf, xg, k, dropped, largest: bool):
        fill = -math.inf if largest else math.inf
        if dropped is None:
            dropped = torch.full((xg.shape[0], ), fill, dtype=xg.dtype, device=xg.device)
        if k <= 0:
            return xg[:, :0], dropped
        if buf is not None and xg.shape[0] == 1 and bool(torch.isfinite(dropped).all()):
            # a value beyond the largest one dropped so far can never be read (that value ranks before it), so one
            # long row contributes only the values past it
            xg = values_beyond(xg[0], dropped[0], largest)[None]
        if buf is not None and xg.shape[1] > k + 1:
            # the top k + 1 of the union are among the buffer and the top k + 1 of the new values, so the long
            # tensor is never concatenated
            xg = group_tail(xg, k + 1, largest)
        cat = xg if buf is None else torch.cat([buf, xg], dim=1)
        if cat.shape[1] <= k:
            return cat.sort(dim=1, descending=largest).values, dropped
        vals = group_tail(cat, k + 1, largest)
        out = vals[:, k]
        dropped = torch.maximum(dropped, out) if largest else torch.minimum(dropped, out)
        return vals[:, :k].contiguous(), dropped

    def _reaches(self, buf, need_fn, counts, dropped, largest: bool) -> torch.Tensor:
        """Per group, whether the buffer holds the deepest rank the quantiles read and no dropped value ranks
        before it."""
        need = need_fn(counts)
        idx = (need - 1).clamp(min=0, max=max(buf.shape[1] - 1, 0))
        deepest = buf.gather(1, idx[:, None])[:, 0]
        return (need <= buf.shape[1]) & ((deepest >= dropped) if largest else (deepest <= dropped))

    def exact(self) -> bool:
        """Whether no value pushed out of a buffer can be one the quantiles read."""
        if self.fixed_counts is not None or self.count is None:
            return True
        ok = torch.ones_like(self.count, dtype=torch.bool)
        if len(self.upper) and self.top.shape[1]:
            ok &= self._reaches(self.top, self._need_upper, self.count, self.dropped_top, True)
        if len(self.lower) and self.bottom.shape[1]:
            ok &= self._reaches(self.bottom, self._need_lower, self.count, self.dropped_bottom, False)
        return bool(ok.all())

    def quantiles(self) -> torch.Tensor:
        """``[G, L]`` quantiles (linear interpolation as ``torch.quantile``); groups without values give 0."""
        n = self.count
        levels = self.levels.to(n.device)
        last = (n - 1).clamp_min(0)
        lo_rank = _rank_floor(levels, n)
        hi_rank = torch.minimum(lo_rank + 1, last[:, None])
        frac = (levels[None, :] * last[:, None].double() - lo_rank.double())
        out = torch.zeros(n.shape[0], len(self.levels), device=n.device)
        upper = self.levels >= 0.5
        for j in range(len(self.levels)):  # a few levels; vectorized over groups
            buf = self.top if bool(upper[j]) else self.bottom
            if buf.shape[1] == 0:  # no group holds any value
                continue
            if bool(upper[j]):
                v_lo = self.top.gather(1, (last - lo_rank[:, j]).clamp_min(0)[:, None])[:, 0]
                v_hi = self.top.gather(1, (last - hi_rank[:, j]).clamp_min(0)[:, None])[:, 0]
            else:
                v_lo = self.bottom.gather(1, lo_rank[:, j][:, None])[:, 0]
                v_hi = self.bottom.gather(1, hi_rank[:, j][:, None])[:, 0]
            val = torch.lerp(v_lo, v_hi, frac[:, j].to(v_lo.dtype))
            out[:, j] = torch.where(n > 0, val, torch.zeros_like(val))
        return out

    def retained(self) -> int:
        """Number of values held in the buffers."""
        return sum(b.numel() for b in (self.top, self.bottom) if b is not None)


class RangeSearch:
    """Statistics and candidate errors of one quantizer over all of its calibration values (see the module doc).

    Usage by a quantizer: ``observe`` every calibration tensor; when it returns a ``(values, weight)`` pair
    (the ``[G, S]`` values to score and a 0/1 weight or None), compute the per-candidate errors summed over the
    values and pass them to :meth:`accumulate`; call :meth:`end_pass` after each pass over the data (it returns
    True when the same data must be observed again, and from the ``score`` stage on :attr:`stage` tells where
    it is); read :attr:`lo`, :attr:`hi`, :attr:`count`, :meth:`quantiles` and :attr:`scores`.

    Args:
        granularity: a static granularity; its ``grouped`` view defines the groups.
        levels: quantile levels needed (``()`` for none).
        score: ``none``, ``with_stats`` (candidates known before any data: scored in the first pass) or
            ``after_stats`` (candidates built from the statistics: scored in a later pass).
        max_samples: ``None`` (score every value) or the number of values scored per observed tensor.
        quantile_mode: ``all`` (quantiles of all values) or ``per_batch_mean``.
    """

    def __init__(self, granularity: Granularity, levels=(), score: str = 'none', max_samples: int | None = None,
                 quantile_mode: str = 'all'):
        self.granularity = granularity
        self.levels = tuple(float(q) for q in levels)
        self.score = check_choice(score, 'score', SCORE_MODES)
        self.max_samples = check_max_samples(max_samples)
        self.quantile_mode = check_quantile_mode(quantile_mode)
        self.stage = 'stats'
        self.passes = 0
        self.lo = self.hi = self.count = None
        self.param_shape = None
        self.batches = 0
        self.scores = None
        self.scored_values = 0
        self._pass_count = None
        self._qsum = None
        self._tails = TailQuantiles(self.levels) if self.levels and self.quantile_mode == 'all' else None
        self._quantiles = None
        self.peak_retained = 0

    # -- observation ----------------------------------------------------------------------------------------
    def grouped(self, x: torch.Tensor, where: str) -> torch.Tensor:
        """``x`` as ``[G, S]`` float, checking that the parameter shape does not change between tensors."""
        self._check_shape(x, where)
        return self.granularity.grouped(x).float()

    def _check_shape(self, x: torch.Tensor, where: str) -> None:
        shape = self.granularity.param_shape(x)
        if self.param_shape is not None and shape != self.param_shape:
            raise QuantizerError(f'{where}: observed parameter shape {shape} differs from earlier tensors '
                                 f'{self.param_shape}; a {self.granularity.name} quantizer needs a fixed size along '
                                 'its axis')
        self.param_shape = shape

    def observe(self, x: torch.Tensor, where: str, valid: torch.Tensor | None = None, grouped: bool = False):
        """Record one tensor; returns ``(values, weight)`` to score, or None.

        Args:
            x: the tensor (or its ``[G, S]`` grouped view with ``grouped=True``).
            where: the quantizer, for messages.
            valid: boolean mask of the values that count (same layout as ``x``), or None for all.
            grouped: ``x`` and ``valid`` are already ``[G, S]``.
        """
        if self.stage == 'stats' and valid is None and not grouped and not self.levels and self.score != 'with_stats':
            return self._observe_extrema(x, where)  # only the ranges: no [G, S] copy
        if self.stage == 'score' and self.max_samples is not None and valid is None and not grouped:
            return self._score_sample(x, where)  # the sample gathered from x: no [G, S] copy either
        xg = x.float() if grouped else self.grouped(x, where)
        vg = None if valid is None else (valid if grouped else self.granularity.grouped(valid))
        counts = torch.full((xg.shape[0], ), xg.shape[1], dtype=torch.long, device=xg.device) if vg is None \
            else vg.sum(1)
        self._count_pass(counts)
        if self.stage == 'stats':
            self._observe_stats(xg, vg)
            return self._to_score(xg, vg) if self.score == 'with_stats' else None
        if self.stage == 'tails':
            self._tails.update(xg, vg)
            self._track_memory()
            return None
        if self.stage == 'score':
            return self._to_score(xg, vg)
        raise QuantizerError(f'{where}: observed data after its search finished; reset() it to calibrate again')

    def _observe_extrema(self, x, where):
        self._check_shape(x, where)
        lo, hi = self.granularity.extrema(x)
        lo, hi = lo.float().reshape(-1), hi.float().reshape(-1)
        counts = torch.full_like(lo, x.numel() // max(1, lo.numel()), dtype=torch.long)
        self._count_pass(counts)
        self._merge_range(lo, hi)
        return None

    def _score_sample(self, x, where):
        """What :meth:`_to_score` returns for all of ``x`` with ``max_samples``, taking the sampled columns from
        ``x`` itself."""
        self._check_shape(x, where)
        g = self.granularity.num_groups(x)
        s = x.numel() // max(1, g)
        counts = torch.full((g, ), s, dtype=torch.long, device=x.device)
        self._count_pass(counts)
        idx = strided_column_index(s, self._sample_columns(g), x.device)
        xg = (self.granularity.grouped(x) if idx is None else self.granularity.grouped_columns(x, idx)).float()
        self.scored_values += xg.numel()
        return xg, None

    def _count_pass(self, counts):
        """Add the values of each group observed in this pass (checked against the first pass at its end)."""
        self._pass_count = counts if self._pass_count is None else self._pass_count + counts

    def _sample_columns(self, groups: int) -> int:
        """Values per group scored of one tensor with ``max_samples``."""
        return max(16, self.max_samples // max(1, groups))

    def _merge_range(self, lo, hi):
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self.batches += 1

    def _observe_stats(self, xg, vg):
        if vg is None:
            lo, hi = xg.amin(dim=1), xg.amax(dim=1)
        else:
            lo = xg.masked_fill(~vg, math.inf).amin(dim=1)
            hi = xg.masked_fill(~vg, -math.inf).amax(dim=1)
        self._merge_range(lo, hi)
        if not self.levels:
            return
        if self._tails is not None:
            self._tails.update(xg, vg)
            self._track_memory()
            return
        qv = group_quantiles(xg, self.levels) if vg is None else masked_group_quantile(xg, vg, self.levels)
        self._qsum = qv if self._qsum is None else self._qsum + qv

    def _to_score(self, xg, vg):
        if self.max_samples is not None:
            per_group = self._sample_columns(xg.shape[0])
            xg = strided_columns(xg, per_group)
            vg = None if vg is None else strided_columns(vg, per_group)
        self.scored_values += xg.numel() if vg is None else int(vg.sum())
        return xg, None if vg is None else vg.to(xg.dtype)

    def accumulate(self, errors: torch.Tensor) -> None:
        """Add the errors of the tensor just returned by :meth:`observe` (any shape, summed element-wise)."""
        errors = errors.double()
        self.scores = errors if self.scores is None else self.scores + errors

    def _track_memory(self):
        self.peak_retained = max(self.peak_retained, self.retained())

    def retained(self) -> int:
        """Values held between tensors (tail buffers, per-group statistics, candidate errors)."""
        n = 0 if self._tails is None else self._tails.retained()
        for t in (self.lo, self.hi, self.count, self._qsum, self.scores):
            n += 0 if t is None else t.numel()
        return n

    # -- passes ---------------------------------------------------------------------------------------------
    def end_pass(self, where: str) -> bool:
        """Finish a pass over the calibration data; True when the quantizer must observe the same data again."""
        counts, self._pass_count = self._pass_count, None
        self.passes += 1
        if self.stage == 'stats':
            self.count = counts
        elif counts is None or not torch.equal(counts, self.count):
            seen = 0 if counts is None else int(counts.sum())
            raise QuantizerError(f'{where}: calibration pass {self.passes} observed {seen} values, the first pass '
                                 f'{int(self.count.sum())}; every pass must run the same calibration data')
        if self.stage == 'stats' and self._tails is not None and not self._tails.exact():
            self._tails = TailQuantiles(self.levels, fixed_counts=self.count)
            self.stage = 'tails'
            return True
        if self.stage in ('stats', 'tails'):
            if self._tails is not None:
                self._quantiles = self._tails.quantiles()
                self._tails = None
            elif self._qsum is not None:
                self._quantiles = self._qsum / self.batches
            if self.score == 'after_stats':
                self.stage = 'score'
                return True
        self.stage = 'done'
        return False

    @property
    def ready(self) -> bool:
        """Statistics and quantiles are complete (after the statistics pass, and the tails pass when the streaming
        quantiles were inexact): candidates built from them can be scored."""
        return self.stage in ('score', 'done')

    @property
    def passes_planned(self) -> int:
        """Passes the search needs (one more when the streaming quantiles turn out inexact)."""
        return 2 if self.score == 'after_stats' else 1

    def quantiles(self) -> torch.Tensor:
        """``[G, L]`` quantiles at ``levels`` (after the statistics pass)."""
        if self._quantiles is None:
            raise QuantizerError('the quantiles are known only after the statistics pass (call end_pass)')
        return self._quantiles

    def reshape(self, v: torch.Tensor) -> torch.Tensor:
        """A per-group vector ``[G]`` reshaped to the parameter shape that broadcasts against inputs."""
        return v.reshape(self.param_shape)

    def info(self) -> dict:
        """What the search did, for the results file: ``exact`` (every value scored, no ``max_samples``),
        ``passes`` over the calibration data, ``values`` observed per pass, ``quantile_mode`` (when it uses
        quantiles), ``scored_values`` (when it scores candidates) and ``max_samples`` (when it samples)."""
        out = dict(exact=self.max_samples is None, passes=self.passes,
                   values=0 if self.count is None else int(self.count.sum()))
        if self.levels:
            out['quantile_mode'] = self.quantile_mode
        if self.score != 'none':
            out['scored_values'] = self.scored_values
            if self.max_samples is not None:
                out['max_samples'] = self.max_samples
        return out


def first_argmin(errors: torch.Tensor) -> torch.Tensor:
    """Index of the smallest error along the last axis; ties go to the first candidate."""
    return errors.argmin(dim=-1)


def alpha_grid(alpha_range, steps: int) -> list[float]:
    """The range-shrink grid ``linspace(*alpha_range, steps)`` (OMSE / PTQ4ViT / Q-HyViT)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or not 0 < alpha_range[0] <= alpha_range[1]:
        raise QuantizerError(f'search_steps={steps!r}, alpha_range={alpha_range!r} are invalid: need search_steps an '
                             'integer >= 1 and 0 < alpha_range[0] <= alpha_range[1]')
    return torch.linspace(float(alpha_range[0]), float(alpha_range[1]), steps).tolist()


def error_sum(x: torch.Tensor, xq: torch.Tensor, p: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the last axis of ``|x - x̂|^p`` (times ``weight``): ``[G]`` for ``[G, S]`` tensors (any leading
    axes); overwrites ``xq``."""
    d = xq.sub_(x)
    if p == 2.0 and weight is None:
        return torch.linalg.vector_norm(d, 2, dim=-1).square_()  # one pass over the values, no temporary
    d = d.abs_()
    d = d.square_() if p == 2.0 else d.pow_(p)
    if weight is not None:
        d.mul_(weight)
    return d.sum(dim=-1)


#: values per tile of :func:`affine_candidate_errors` (about 1 MB of float32: it stays in cache)
CANDIDATE_TILE = 1 << 18


def affine_candidate_errors(xs: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin, qmax,
                            p: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``[G, K]``: :func:`error_sum` of the ``[G, S]`` values ``xs`` fake-quantized with each candidate
    ``(scale[:, k], zero_point[:, k])`` (``[G, K]``).

    Short rows (weights) are quantized in tiles of a few rows by a few candidates, small enough to stay in cache;
    long rows candidate by candidate. Each row is reduced over its values as in the candidate loop, so both give
    the same numbers.
    """
    g, s = xs.shape
    k = scale.shape[1]
    if s >= CANDIDATE_TILE:
        return torch.stack([error_sum(xs, fake_quant_affine(xs, scale[:, i, None], zero_point[:, i, None], qmin, qmax),
                                      p, weight) for i in range(k)], dim=1)
    cands = min(k, max(1, CANDIDATE_TILE // s))
    rows = max(1, CANDIDATE_TILE // (s * cands))
    out = torch.empty(g, k, dtype=xs.dtype, device=xs.device)
    for r0 in range(0, g, rows):
        x = xs[r0:r0 + rows, None, :]
        w = None if weight is None else weight[r0:r0 + rows, None, :]
        for k0 in range(0, k, cands):
            sl = (slice(r0, r0 + rows), slice(k0, k0 + cands))
            xq = fake_quant_affine(x, scale[sl][..., None], zero_point[sl][..., None], qmin, qmax)
            out[sl] = error_sum(x, xq, p, w)
    return out
