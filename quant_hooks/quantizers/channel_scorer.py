"""Exact per-group sums of many candidate quantizers whose parameters differ per group (channel-wise ranges).

A histogram (:class:`~.step_scorer.StepErrorScorer`) needs one set of thresholds for all values; with a range
per channel every channel has its own. Every step boundary of every candidate is found exactly on the float32
line (:func:`~.step_scorer.step_thresholds`); a value's *bucket* is the number of distinct boundaries of its
channel at or below it, and the count and sum of the values of each bucket give the count and sum of every
candidate's every step (prefix sums over the buckets).

The bucket of a value comes from a lookup table over equal cells of its channel's range: a cell that no
boundary comes near (within a margin far larger than the float32 rounding of the cell index) gives the bucket
of every value in it; a cell that boundaries come near gives the boundaries certainly below it, and its values
are placed by a short binary search among the few boundaries that may cut it (on order-preserving int32 keys,
:func:`~.step_scorer.float_key`, so every value at a boundary goes where the quantizer puts it; ``-0.0`` counts
as ``+0.0``, as it does in the quantizer's arithmetic). The values are processed in tiles of a few channels by a
few thousand values, small enough to stay in cache: a dozen cheap passes over each tile, no sort.
"""
from __future__ import annotations

from typing import Callable

import torch

from .step_scorer import check_steps, float_key, key_float, step_thresholds, window_search_
from .workspace import workspace

#: groups with fewer values per tensor are scored candidate by candidate
CHANNEL_SCORER_MIN_VALUES = 64
#: lookup cells per group: about this many per distinct boundary, within [MIN_CELLS, MAX_CELLS]
CELLS_PER_BOUNDARY = 8
MIN_CELLS, MAX_CELLS = 1 << 10, 1 << 16
#: at most this many lookup entries per scorer (int16 where the buckets fit, else int32), whatever the number of
#: groups
MAX_TABLE = 1 << 22
#: at most this many step boundaries (groups x candidates x steps) per scorer: a scorer holds about 36 bytes per
#: boundary (about 150 MB at the bound, W4 Swin-T's widest layer needs 3.7M); a search with more is scored
#: candidate by candidate
MAX_BOUNDARIES = 1 << 22
#: margin around each cell, in cells: the float32 cell index of a value is off by less than 2e-7 * cells (< 0.02)
CELL_MARGIN = 0.05
#: ranges whose cell index float32 cannot compute within the margin (cells of subnormal width, ranges near the
#: float32 maximum) have every value placed by binary search among all the boundaries of their group
_MAX_INV_WIDTH, _MAX_SPAN = 1e30, 1e37
#: values are bucketed and summed in tiles of TILE_ROWS groups by about TILE_VALUES values (in cache)
TILE_ROWS, TILE_VALUES = 64, 1 << 18

_NO_BOUNDARY = 2**31 - 1  # above every finite value's key


class ChannelStepSums:
    """Per group and candidate, the count and the sum of the values falling in each step.

    Args:
        quantize: ``quantize(x, cands)`` fake-quantizes the float32 ``[G', K', M]`` tensor ``x``: row ``k`` with
            candidate ``cands[k]`` of each group (``G' = G``), or of any group (``G' = 1``, used only for the
            candidates in ``shared``); for every group and candidate a non-decreasing function whose outputs are
            ``levels``, equal at ``-0.0`` and ``+0.0``.
        levels: ``[G, K, L]`` float32 outputs of each candidate, in increasing order.
        lo, hi: ``[G]``: every value of group ``g`` lies in ``[lo[g], hi[g]]``.
        shared: optional ``[K]`` bool: candidates that are the same function in every group (a layer-wise range
            among channel-wise ones); their boundaries are found once.
        first_keys: optional ``[G, K, L - 1]`` int64: where each step is expected to start (for affine candidates,
            :func:`~.step_scorer.affine_first_keys`); used once checked against ``quantize``, else the steps are
            searched as without it. For the ``shared`` candidates only the first group's row is read.

    Raises:
        ValueError: when a candidate is not a step function with these levels (the caller then scores
            candidate by candidate).
    """

    def __init__(self, quantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], levels: torch.Tensor,
                 lo: torch.Tensor, hi: torch.Tensor, shared: torch.Tensor | None = None,
                 first_keys: torch.Tensor | None = None):
        self.levels = levels.float()
        g, k, n_lev = self.levels.shape
        # + 0.0 turns -0.0 into +0.0: the keys of the range then order as the floats do
        klo, khi = float_key(lo.float() + 0.0).long(), float_key(hi.float() + 0.0).long()
        shared = torch.zeros(k, dtype=torch.bool) if shared is None else shared.bool()
        thr = torch.empty(g, k, n_lev - 1, dtype=torch.long)
        for mask, once in ((~shared, False), (shared, True)):
            cands = mask.nonzero().squeeze(1)
            if not cands.numel():
                continue
            guess = None if first_keys is None else first_keys[:1 if once else g, cands]
            if once:  # one group over the union of the ranges (each boundary is clipped to its group's range below)
                found = self._thresholds(quantize, cands, self.levels[:1, cands], klo.min()[None], khi.max()[None],
                                         guess)
            else:
                found = self._thresholds(quantize, cands, self.levels[:, cands], klo, khi, guess)
            thr[:, cands] = found
        self.lo32, self.hi32 = key_float(klo), key_float(khi)
        # distinct boundaries inside (klo, khi] per group, ascending, padded with _NO_BOUNDARY: a boundary at or below
        # klo is below every value (kept once, as klo), one above khi above every value
        clipped = torch.where(thr > khi[:, None, None], _NO_BOUNDARY, thr.clamp(min=klo[:, None, None])).view(g, -1)
        ordered, order = clipped.sort(dim=1)
        new = torch.ones_like(ordered, dtype=torch.bool)
        new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        rank = new.cumsum(1).sub_(1)  # index of each boundary among the distinct ones of its group
        m = int(rank[:, -1].max()) + 1
        distinct = torch.full((g, m), _NO_BOUNDARY, dtype=torch.long).scatter_(1, rank, ordered)
        self.n_bounds = int((distinct < _NO_BOUNDARY).sum(1).max())
        # the values below a candidate's boundary are those of buckets 0..j, j its index among the distinct ones:
        # entry j + 1 of the prefix sums (which start with 0)
        self.below_index = torch.empty_like(rank).scatter_(1, order, rank).add_(1).view(thr.shape).int()
        del thr, clipped, ordered, order, new, rank
        self.group_stride = m
        self._table(distinct, klo, khi)
        self.values_seen = 0
        self.values_searched = 0
        self._clear()

    def _clear(self) -> None:
        """Drop the running bucket counts and sums."""
        self._count = self._total = self._square = None
        self._held = 0  # values per group added since

    @staticmethod
    def _thresholds(quantize, cands, levels, klo, khi, guess=None):
        """``[G', K', L - 1]`` first keys of each step of candidates ``cands`` (checked to be a step function);
        ``guess``: the expected keys, kept where the check confirms them all."""
        def evaluate(keys):
            return quantize(key_float(keys), cands)

        if guess is not None:
            lo, hi = klo[:, None, None], khi[:, None, None]
            thr = torch.minimum(torch.maximum(guess, lo), hi + 1)
            try:
                check_steps(evaluate, levels, thr, klo, khi)
                return thr
            except ValueError:
                pass
        target = levels[..., 1:]
        thr = step_thresholds(lambda keys: evaluate(keys) >= target, levels, klo, khi)
        check_steps(evaluate, levels, thr, klo, khi)
        return thr

    def _table(self, distinct: torch.Tensor, klo: torch.Tensor, khi: torch.Tensor) -> None:
        """The cell lookup: ``table[g * cells + c]`` = the bucket of every value in cell ``c`` of group ``g``, or
        ``-1 - j`` where a boundary lies within the cell (widened by the margin) and ``j`` boundaries lie certainly
        below it; the boundaries that may cut a cell are searched in a window of ``self.window`` from there."""
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
        # below[c]: boundaries certainly under every value of cell c (pos + margin < c); span[c]: those that may be
        # at or under one of its values (pos - margin <= c + 1) but are not certainly under all of them
        first_clear = torch.floor(pos + CELL_MARGIN).clamp(-1, cells).long() + 1  # the cells it is below
        first_reach = torch.ceil(pos - CELL_MARGIN).clamp(1, cells + 1).long() - 1  # the cells it may reach
        del pos
        small = m < torch.iinfo(torch.int16).max  # buckets 0..m (and -1 - m) fit int16: half the memory
        dtype = torch.int16 if small else torch.int32
        count = torch.zeros(g, cells + 1, dtype=dtype)
        ones = torch.ones_like(first_clear, dtype=dtype)
        clear = torch.where(valid, first_clear.clamp_(max=cells), cells)  # cells: under no cell
        below = torch.cumsum(count.scatter_add_(1, clear, ones), 1, dtype=dtype)[:, :cells]
        count.zero_().scatter_add_(1, torch.where(valid, first_reach, cells), ones).scatter_add_(1, clear, -ones)
        span = torch.cumsum(count, 1, dtype=dtype)[:, :cells]
        del count, ones, clear, first_clear, first_reach
        self.cells = cells
        if not bool(usable.all()):
            span.masked_fill_(~usable[:, None], 0)
        # the boundaries that may cut a cell follow the `below` certain ones: a window of the next `window` (a power
        # of two above the most that one cell may hold) holds them all
        self.window = 1 << int(span.max()).bit_length()
        table = torch.where(span > 0, below.bitwise_not(), below)  # ~j = -1 - j
        if not bool(usable.all()):
            table.masked_fill_(~usable[:, None], -1)
        self.table = table.reshape(-1)
        del below, span, table
        self.inv32 = torch.where(usable, inv, 0).float()
        self.cell_offset = torch.arange(g, dtype=torch.int32) * cells
        # int32 keys of each group's distinct boundaries, every row padded so that a window never leaves it
        self.bounds = torch.nn.functional.pad(distinct, (0, self.window), value=_NO_BOUNDARY).to(torch.int32)
        self.bound_stride = m + self.window
        # groups without usable cells: their values are searched among all their boundaries
        self.unusable = (~usable).nonzero().squeeze(1)
        self._flat = None
        if self.unusable.numel():
            offset = torch.arange(g, dtype=torch.long)[:, None] << 32
            self._flat = (distinct + offset).reshape(-1).contiguous()

    def _inside(self, xs: torch.Tensor) -> bool:
        """Whether every value lies in its group's range (False for NaN)."""
        return bool(((xs.amin(1) >= self.lo32) & (xs.amax(1) <= self.hi32)).all())

    def _tiles(self, xs: torch.Tensor):
        """``(r0, r1, tile, axis)``: contiguous float32 tiles of ``xs`` holding groups ``r0:r1`` along ``axis``.

        Rows of ``xs`` in memory give ``[groups, values]`` tiles (``axis`` 0); channel-last values (``xs`` a
        transposed view) give ``[values, groups]`` tiles (``axis`` 1), copied row by row: no tile is ever
        transposed."""
        g, s = xs.shape
        last = xs.stride(0) == 1 and xs.stride(1) != 1 and s > 1
        if not last and xs.stride(1) != 1:
            xs = xs.contiguous()
        rows = min(g, TILE_ROWS)
        cols = max(1, TILE_VALUES // rows)
        for r0 in range(0, g, rows):
            r1 = min(g, r0 + rows)
            for c0 in range(0, s, cols):
                part = xs[r0:r1, c0:c0 + cols]
                part = part.t() if last else part
                if not part.is_contiguous():
                    part = workspace('tile_x', part.numel(), torch.float32).view(part.shape).copy_(part)
                yield r0, r1, part, int(last)

    def _tile_buckets(self, x: torch.Tensor, r0: int, r1: int, axis: int) -> torch.Tensor:
        """int32 bucket of each value of the contiguous tile ``x`` (groups ``r0:r1`` along ``axis``), not offset
        by group."""
        n = x.numel()
        shape = (-1, 1) if axis == 0 else (1, -1)
        f = torch.sub(x, self.lo32[r0:r1].view(shape), out=workspace('tile_f', n, torch.float32).view(x.shape))
        f.mul_(self.inv32[r0:r1].view(shape)).clamp_(0, self.cells - 1)  # >= 0: the int conversion is the floor
        cell = workspace('tile_cell', n, torch.int32).view(x.shape).copy_(f)
        cell.add_(self.cell_offset[r0:r1].view(shape))
        entry = torch.index_select(self.table, 0, cell.view(-1), out=workspace('tile_entry', n, self.table.dtype))
        bucket = workspace('tile_bucket', n, torch.int32).copy_(entry)
        near = (bucket < 0).nonzero().squeeze(1)
        if near.numel():
            if axis == 0:
                group = torch.div(near, x.shape[1], rounding_mode='floor').add_(r0)
            else:
                group = torch.remainder(near, x.shape[1]).add_(r0)
            bucket[near] = self._place(x.view(-1)[near], group, -1 - bucket[near])
            self.values_searched += near.numel()
        return bucket.view(x.shape)

    def _place(self, values: torch.Tensor, group: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
        """Bucket of ``values`` of cut cells: ``below`` plus the boundaries of their window at or below them."""
        keys = float_key(values + 0.0)  # + 0.0: -0.0 counts as +0.0
        index = (group * self.bound_stride).to(torch.int32).add_(below)
        window_search_(index, self.bounds.view(-1), keys, self.window)  # the boundaries of a window ascend
        bucket = index.sub_((group * self.bound_stride).to(torch.int32))
        if self._flat is not None:
            lost = torch.isin(group, self.unusable).nonzero().squeeze(1)
            if lost.numel():
                g = group[lost]
                found = torch.searchsorted(self._flat, keys[lost].long() + (g << 32), right=True)
                bucket[lost] = (found - g * self.group_stride).to(torch.int32)
        return bucket

    def buckets(self, xs: torch.Tensor) -> torch.Tensor | None:
        """``[G, S]`` int32: the bucket of each float32 value (distinct boundaries of its group at or below it),
        offset by ``g * (boundaries + 1)``; None when a value lies outside its group's range."""
        if not self._inside(xs):
            return None
        out = torch.empty(xs.shape, dtype=torch.int32)
        m = self.group_stride + 1
        c0 = {}
        for r0, r1, x, axis in self._tiles(xs):
            bucket = self._tile_buckets(x, r0, r1, axis)
            bucket = (bucket if axis == 0 else bucket.t()) + torch.arange(r0, r1, dtype=torch.int32)[:, None] * m
            start = c0.get(r0, 0)
            out[r0:r1, start:start + bucket.shape[1]] = bucket
            c0[r0] = start + bucket.shape[1]
        self.values_seen += xs.numel()
        return out

    def add(self, xs: torch.Tensor) -> bool:
        """Add the float32 ``[G, S]`` values ``xs`` to the running bucket counts and sums; False (nothing added)
        when a value lies outside its group's range."""
        if not self._inside(xs):
            return False
        g, s = xs.shape
        m = self.group_stride + 1
        if self._count is None:
            self._count = torch.zeros(g * m, dtype=torch.int32)  # half the memory while no bucket can reach 2^31
            self._total = torch.zeros(g * m, dtype=torch.float64)
            self._square = torch.zeros(g, dtype=torch.float64)
        elif self._held + s > torch.iinfo(torch.int32).max:
            self._count = self._count.long()
        self._held += s
        local = torch.arange(min(g, TILE_ROWS), dtype=torch.int32) * m
        for r0, r1, x, axis in self._tiles(xs):
            r = r1 - r0
            bucket = self._tile_buckets(x, r0, r1, axis)
            index = bucket.add_(local[:r].view((-1, 1) if axis == 0 else (1, -1))).view(-1)
            xd = workspace('tile_xd', x.numel(), torch.float64).view(x.shape).copy_(x)
            self._count[r0 * m:r1 * m] += torch.bincount(index, minlength=r * m)
            self._total[r0 * m:r1 * m] += torch.bincount(index, xd.view(-1), minlength=r * m)
            self._square[r0:r1] += torch.linalg.vecdot(xd, xd) if axis == 0 else xd.square_().sum(0)
        self.values_seen += xs.numel()
        return True

    def take(self):
        """``(n, s1, s2)`` of every value added since the last call (None if none): ``n`` and ``s1`` the count and
        sum of each candidate's steps (``[G, K, L]``, float64), ``s2`` the sum of squares of each group (``[G]``)."""
        if self._count is None:
            return None
        g, k, n_lev = self.levels.shape
        m = self.group_stride + 1
        edges = torch.cat([torch.zeros(g, k, 1, dtype=torch.long), self.below_index.long(),
                           torch.full((g, k, 1), m, dtype=torch.long)], dim=2).view(g, -1)
        per_step = []
        for sums in (self._count.double(), self._total):
            prefix = torch.nn.functional.pad(sums.view(g, m).cumsum(1), (1, 0))
            per_step.append(prefix.gather(1, edges).view(g, k, n_lev + 1).diff(dim=2))
        square = self._square
        self._clear()
        return per_step[0], per_step[1], square

    def sums(self, xs: torch.Tensor):
        """:meth:`take` of the values ``xs`` alone; None when a value lies outside its group's range."""
        self._clear()
        return self.take() if self.add(xs) else None

    def info(self) -> dict:
        """Values scored, those placed by binary search, the lookup cells per group, the most distinct boundaries
        of a group and the search window of a cut cell."""
        return dict(values=self.values_seen, searched=self.values_searched, cells=self.cells,
                    boundaries=self.n_bounds, window=self.window)
