"""Exact per-group sums of many candidate quantizers whose parameters differ per group (channel-wise ranges).

A histogram (:class:`~.step_scorer.StepErrorScorer`) needs one set of thresholds for all values; with a range
per channel every channel has its own. Every step boundary of every candidate is found exactly on the float32
line (:func:`~.step_scorer.step_thresholds`); a value's *bucket* is the number of distinct boundaries of its
channel at or below it, and the count and sum of the values of each bucket give the count and sum of every
candidate's every step (prefix sums over the buckets).

The bucket of a value comes from a lookup table over equal cells of its channel's range: a cell that no
boundary comes near (within a margin far larger than the float32 rounding of the cell index) gives the bucket
of every value in it; the values of the other cells are placed by binary search among the boundaries of all
channels (as order-preserving int32 keys, :func:`~.step_scorer.float_key`, so ``-0.0`` and ``+0.0`` and every
value at a boundary go where the quantizer puts them). A dozen passes over the values instead of a sort of each
channel.
"""
from __future__ import annotations

from typing import Callable

import torch

from .step_scorer import check_steps, float_key, key_float, step_thresholds

#: groups with fewer values per tensor are scored candidate by candidate
CHANNEL_SCORER_MIN_VALUES = 64
#: lookup cells per group: about this many per distinct boundary, within [MIN_CELLS, MAX_CELLS]
CELLS_PER_BOUNDARY = 8
MIN_CELLS, MAX_CELLS = 1 << 10, 1 << 16
#: at most this many lookup entries per scorer (int32), whatever the number of groups
MAX_TABLE = 1 << 22
#: margin around each cell, in cells: the float32 cell index of a value is off by less than 2e-7 * cells (< 0.02)
CELL_MARGIN = 0.05
#: ranges whose cell index float32 cannot compute within the margin (cells of subnormal width, ranges near the
#: float32 maximum) have every value placed by binary search
_MAX_INV_WIDTH, _MAX_SPAN = 1e30, 1e37

_NO_BOUNDARY = 2**31 - 1  # above every finite value's key


class ChannelStepSums:
    """Per group and candidate, the count and the sum of the values falling in each step.

    Args:
        quantize: ``quantize(x)`` fake-quantizes the float32 ``[G, K, M]`` tensor ``x`` with candidate ``k`` of
            group ``g``; for every group and candidate a non-decreasing function whose outputs are ``levels``.
        levels: ``[G, K, L]`` float32 outputs of each candidate, in increasing order.
        lo, hi: ``[G]``: every value of group ``g`` lies in ``[lo[g], hi[g]]``.

    Raises:
        ValueError: when a candidate is not a step function with these levels (the caller then scores
            candidate by candidate).
    """

    def __init__(self, quantize: Callable[[torch.Tensor], torch.Tensor], levels: torch.Tensor, lo: torch.Tensor,
                 hi: torch.Tensor):
        self.levels = levels.float()
        klo, khi = float_key(lo.float()).long(), float_key(hi.float()).long()

        def evaluate(keys):
            return quantize(key_float(keys))

        target = self.levels[..., 1:]
        thr = step_thresholds(lambda keys: evaluate(keys) >= target, self.levels, klo, khi)
        check_steps(evaluate, self.levels, thr, klo, khi)
        g = self.levels.shape[0]
        self.klo, self.khi = klo.to(torch.int32), khi.to(torch.int32)
        # distinct boundaries inside (klo, khi] per group, ascending, padded with _NO_BOUNDARY: a boundary at or below
        # klo is below every value (kept once, as klo), one above khi above every value (dropped)
        clipped = torch.where(thr > khi[:, None, None], _NO_BOUNDARY, thr.clamp(min=klo[:, None, None]))
        bounds = clipped.reshape(g, -1).sort(dim=1).values
        repeat = torch.zeros_like(bounds, dtype=torch.bool)
        repeat[:, 1:] = bounds[:, 1:] == bounds[:, :-1]
        distinct = torch.where(repeat, _NO_BOUNDARY, bounds).sort(dim=1).values
        self.n_bounds = int((distinct < _NO_BOUNDARY).sum(1).max())
        distinct = distinct[:, :self.n_bounds + 1].contiguous()  # at least one _NO_BOUNDARY per group
        m = distinct.shape[1]
        # the values below a candidate's boundary are those of buckets 0..j, j its index among the distinct ones:
        # entry j + 1 of the prefix sums (which start with 0)
        self.below_index = (torch.searchsorted(distinct, clipped.reshape(g, -1)) + 1).reshape(thr.shape)
        # binary search of all groups at once: group g's keys shifted by g * 2^32
        offset = torch.arange(g, dtype=torch.long)[:, None] << 32
        self.flat_bounds = (distinct + offset).reshape(-1).contiguous()
        self.group_stride = m
        self._table(distinct, klo, khi)
        self.values_seen = 0
        self.values_searched = 0
        self._count = self._total = self._square = None

    def _table(self, distinct: torch.Tensor, klo: torch.Tensor, khi: torch.Tensor) -> None:
        """The cell lookup: ``table[g * cells + c]`` = the bucket of every value in cell ``c`` of group ``g``, or
        -1 where a boundary lies within the cell (widened by the margin)."""
        g, m = distinct.shape
        cells = 1 << max(0, (CELLS_PER_BOUNDARY * max(1, self.n_bounds) - 1).bit_length())
        cells = max(MIN_CELLS, min(MAX_CELLS, cells, max(1, MAX_TABLE // g)))
        lo, hi = key_float(klo).double(), key_float(khi).double()
        span = hi - lo
        inv = torch.where(span > 0, cells / span, torch.zeros_like(span))
        usable = (span > 0) & (inv < _MAX_INV_WIDTH) & (span < _MAX_SPAN)
        valid = distinct < _NO_BOUNDARY
        pos = (key_float(torch.where(valid, distinct, 0)).double() - lo[:, None]) * inv[:, None]  # in cells
        pos = torch.where(distinct == klo[:, None], -torch.inf, pos)  # at the bottom of the range: below every value
        # below[c]: boundaries certainly under every value of cell c (pos + margin < c); reach[c]: boundaries that
        # may be at or under one of its values (pos - margin <= c + 1)
        first_clear = torch.floor(pos + CELL_MARGIN).clamp(-1, cells).long() + 1  # the cells it is below
        first_reach = torch.ceil(pos - CELL_MARGIN).clamp(0, cells + 1).long()  # reaches cells >= first_reach - 1
        count = torch.zeros(g, cells + 2, dtype=torch.int32)
        ones = torch.ones_like(first_clear, dtype=torch.int32)
        count.scatter_add_(1, torch.where(valid, first_clear, cells + 1), ones)
        below = torch.cumsum(count, 1, dtype=torch.int32)[:, :cells]
        count.zero_().scatter_add_(1, torch.where(valid, first_reach, cells + 1), ones)
        reach = torch.cumsum(count, 1, dtype=torch.int32)[:, 1:cells + 1]
        self.cells = cells
        self.table = below.masked_fill_((below != reach) | ~usable[:, None], -1).reshape(-1).contiguous()
        self.lo32 = lo.float()[:, None]
        self.inv32 = torch.where(usable, inv, 0).float()[:, None]
        self.cell_offset = (torch.arange(g, dtype=torch.int32) * cells)[:, None]
        self.bucket_offset = (torch.arange(g, dtype=torch.int32) * (m + 1))[:, None]

    def buckets(self, xs: torch.Tensor) -> torch.Tensor | None:
        """``[G, S]`` int32: the bucket of each float32 value (distinct boundaries of its group at or below it),
        offset by ``g * (boundaries + 1)``; None when a value lies outside its group's range."""
        xs = xs.contiguous()
        keys = float_key(xs)
        kmin, kmax = torch.aminmax(keys, dim=1)
        if bool((kmin < self.klo).any() | (kmax > self.khi).any()):
            return None
        g, s = xs.shape
        cell = torch.sub(xs, self.lo32).mul_(self.inv32).floor_().clamp_(0, self.cells - 1).to(torch.int32)
        bucket = self.table.index_select(0, cell.add_(self.cell_offset).view(-1))
        near = (bucket < 0).nonzero().squeeze(1)
        if near.numel():
            group = torch.div(near, s, rounding_mode='floor')
            flat_key = keys.view(-1)[near].long() + (group << 32)
            found = torch.searchsorted(self.flat_bounds, flat_key, right=True) - group * self.group_stride
            bucket[near] = found.to(torch.int32)
        self.values_seen += xs.numel()
        self.values_searched += near.numel()
        return bucket.view(g, s).add_(self.bucket_offset)

    def add(self, xs: torch.Tensor) -> bool:
        """Add the float32 ``[G, S]`` values ``xs`` to the running bucket counts and sums; False (nothing added)
        when a value lies outside its group's range."""
        xs = xs.contiguous()
        bucket = self.buckets(xs)
        if bucket is None:
            return False
        g = xs.shape[0]
        m = self.group_stride + 1
        index = bucket.view(-1)
        xd = xs.view(-1).double()
        count = torch.bincount(index, minlength=g * m).view(g, m)
        if self._count is None:
            self._count = count
            self._total = torch.zeros(g * m, dtype=torch.float64)
            self._square = torch.zeros(g, dtype=torch.float64)
        else:
            self._count += count
        self._total.index_add_(0, index, xd)
        xd = xd.view(g, -1)
        self._square += torch.bmm(xd[:, None, :], xd[:, :, None]).view(g)
        return True

    def take(self):
        """``(n, s1, s2)`` of every value added since the last call (None if none): ``n`` and ``s1`` the count and
        sum of each candidate's steps (``[G, K, L]``, float64), ``s2`` the sum of squares of each group (``[G]``)."""
        if self._count is None:
            return None
        g, k, n_lev = self.levels.shape
        m = self.group_stride + 1
        edges = torch.cat([torch.zeros(g, k, 1, dtype=torch.long), self.below_index,
                           torch.full((g, k, 1), m, dtype=torch.long)], dim=2).view(g, -1)
        per_step = []
        for sums in (self._count.double(), self._total.view(g, m)):
            prefix = torch.nn.functional.pad(sums.cumsum(1), (1, 0))
            per_step.append(prefix.gather(1, edges).view(g, k, n_lev + 1).diff(dim=2))
        square = self._square
        self._count = self._total = self._square = None
        return per_step[0], per_step[1], square

    def sums(self, xs: torch.Tensor):
        """:meth:`take` of the values ``xs`` alone; None when a value lies outside its group's range."""
        self._count = self._total = self._square = None
        return self.take() if self.add(xs) else None

    def info(self) -> dict:
        """Values scored, those placed by binary search, and the lookup cells per group."""
        return dict(values=self.values_seen, searched=self.values_searched, cells=self.cells,
                    boundaries=self.n_bounds)
