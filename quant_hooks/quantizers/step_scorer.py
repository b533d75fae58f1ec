"""Exact squared error of many candidate per-tensor quantizers at once, without quantizing every value once per
candidate.

A per-tensor uniform (or log, or twin) fake quantizer is a non-decreasing step function of ``x``: every float32
value between two consecutive thresholds gets the same output. Once the candidates of a search are known, each
candidate's thresholds are found exactly, on the float32 line, by bisection over the values the quantizer itself
produces (:class:`StepErrorScorer`). The thresholds of all candidates together cut the line into cells, each of
which lies in one step of every candidate, so the count and sum of the values in each cell give every candidate's
error (``Σ(x - c)² = Σx² - 2c·Σx + c²·n``, in float64; ``Σx²`` over all steps is the same for every candidate).
A value's cell is the number of thresholds at or below its order-preserving integer key (:func:`float_key`),
found by a table over coarse bins of the keys and a short branch-free search among the few thresholds inside a
bin (:class:`CellLookup`). The result is the sum of quantizing every value with every candidate (up to float64
rounding of the sums), in about a dozen cheap passes over the tensor instead of about five per candidate.
"""
from __future__ import annotations

from typing import Callable

import torch

from .workspace import workspace

#: tensors with fewer values are scored candidate by candidate (the cell sums do not pay off)
STEP_SCORER_MIN_VALUES = 1 << 16
#: fewer candidates are scored one by one (a few passes each cost less than the cell sums)
STEP_SCORER_MIN_CANDIDATES = 8
#: at most this many lookup bins (int32 each) per scorer
STEP_SCORER_BINS = 1 << 18
#: values per block of :meth:`StepErrorScorer.errors`
SCORE_BLOCK = 1 << 16


def affine_levels(scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``[C, L]`` outputs ``(k - z)·Δ`` of candidate affine quantizers for every code ``k`` in ``[qmin, qmax]``,
    computed as the forward computes them (float32 ``(k - z)`` times ``Δ``)."""
    codes = torch.arange(qmin, qmax + 1, dtype=torch.float32)
    return (codes[None, :] - zero_point.float()[:, None]) * scale.float()[:, None]


def build_step_scorer(quantize, levels: torch.Tensor, lo: float, hi: float, codes=None):
    """A :class:`StepErrorScorer`, or False where the candidates are not step functions of these levels (the
    caller then scores candidate by candidate)."""
    try:
        return StepErrorScorer(quantize, levels, lo, hi, codes=codes)
    except ValueError:
        return False


def step_scorer_applies(xs: torch.Tensor, n_candidates: int, weight=None, error_p: float = 2.0) -> bool:
    """Whether ``[G, S]`` values are scored by a histogram: one group, L2, no weight, float32, large, and enough
    candidates for the histogram to pay off."""
    return (weight is None and error_p == 2.0 and xs.shape[0] == 1 and xs.dtype == torch.float32
            and xs.shape[1] >= STEP_SCORER_MIN_VALUES and n_candidates >= STEP_SCORER_MIN_CANDIDATES)


def float_key(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """int32 keys of float32 values whose order is the order of the values (``-0.0`` just below ``+0.0``);
    ``out``: an int32 tensor of ``x``'s shape to write them to."""
    bits = x.contiguous().view(torch.int32)
    return torch.bitwise_right_shift(bits, 31, out=out).bitwise_and_(0x7FFFFFFF).bitwise_xor_(bits)


def key_float(key: torch.Tensor) -> torch.Tensor:
    """float32 values of int keys in the int32 range (inverse of :func:`float_key`)."""
    k = key.to(torch.int32)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32)


def _key_of(value: float) -> int:
    return int(float_key(torch.tensor([value], dtype=torch.float32))[0])


def _lead(t: torch.Tensor, shape) -> torch.Tensor:
    """int64 ``t`` (per leading axis, or a scalar) broadcast to ``shape``."""
    t = t.long()
    return t.reshape(t.shape + (1, ) * (len(shape) - t.dim())).expand(shape)


#: the switch of a step is first looked for among this many keys around the midpoint of its two levels (a power of
#: two; measured: within 2 keys of it for uniform candidates)
GUESS_KEYS = 16


def step_thresholds(reached, levels: torch.Tensor, klo: torch.Tensor, khi: torch.Tensor) -> torch.Tensor:
    """``[..., L - 1]`` int64 keys: for each step above the lowest, the smallest key in ``[klo, khi]`` where
    ``reached(keys)`` (a monotone predicate on ``[..., L - 1]`` keys) holds, ``khi + 1`` where it never does.

    The search starts among ``GUESS_KEYS`` keys around the midpoint of the two levels (where round to nearest
    switches): two calls check that the switch lies there, and a branch-free binary search finds it in
    log2(GUESS_KEYS) more. Where some switch lies outside, those steps are bisected over the whole ``[klo, khi]``
    on the float32 line (the others within their bracket). ``klo`` / ``khi`` broadcast against the leading axes.
    """
    shape = levels[..., 1:].shape
    klo, top = _lead(klo, shape), _lead(khi, shape) + 1
    cap = top - 1  # the largest key ``reached`` is asked about
    mid = (levels[..., 1:].double() + levels[..., :-1].double()) / 2
    guess = float_key(mid.float().contiguous()).long()
    # the switch t lies in [a, b] when reached(a - 1) fails (or a is klo) and reached(b) holds (or b is top)
    a = torch.maximum(torch.minimum(guess - GUESS_KEYS // 2, top), klo)
    b = torch.maximum(torch.minimum(guess + (GUESS_KEYS // 2 - 1), top), klo)
    ok = ((a == klo) | ~reached(torch.minimum(torch.maximum(a - 1, klo), cap))) \
        & ((b == top) | reached(torch.minimum(b, cap)))
    if bool(ok.all()):
        # b - a < GUESS_KEYS: binary lifting from a - 1, a key known to be below t, by GUESS_KEYS / 2, ..., 1
        below = a - 1
        step = GUESS_KEYS // 2
        while step:
            probe = below + step
            move = (probe < b).logical_and_(reached(torch.minimum(probe, cap)).logical_not_())
            below = torch.where(move, probe, below)
            step //= 2
        return below.add_(1)
    a, b = torch.where(ok, a, klo), torch.where(ok, b, top)
    while bool((a < b).any()):
        m = torch.div(a + b, 2, rounding_mode='floor')
        hit = reached(torch.minimum(m, cap))
        open_ = a < b
        b = torch.where(open_ & hit, m, b)
        a = torch.where(open_ & ~hit, m + 1, a)
    return a


def affine_first_keys(scale: torch.Tensor, zero_point: torch.Tensor, qmin: torch.Tensor, qmax: torch.Tensor,
                      n_levels: int) -> torch.Tensor:
    """``[..., n_levels - 1]`` int64: the first float32 key of each step above the lowest of
    :func:`~.functional.fake_quant_affine` with ``scale > 0`` (``[...]`` parameters, codes ``[qmin, qmax]``).

    Step ``l`` outputs the shifted code ``r = qmin - z + l``: it starts at the smallest ``x`` whose float32
    quotient ``x / Δ`` rounds (half to even) to ``r`` or more, i.e. reaches ``y = r - 0.5`` (``r`` even) or the
    float32 just above it (``r`` odd). A correctly rounded quotient reaches ``y`` exactly when ``x / Δ`` is above the
    midpoint ``m`` between ``y`` and the float32 below it. ``m·Δ`` is exact in float64 and never a float32 (``m``
    needs one significant bit more than a float32 has, and so does its product with any scale), so the step starts
    at the smallest float32 above ``m·Δ``. Callers check the keys against the quantizer (:func:`check_steps`):
    this is where a step search would start, not a replacement for the check.
    """
    codes = (qmin - zero_point).double()[..., None] + torch.arange(1, n_levels, dtype=torch.float64)  # r
    first = int(codes.min()) if codes.numel() else 0
    # per distinct code (few): the midpoint m
    r = torch.arange(first, int(codes.max()) + 1 if codes.numel() else first + 1, dtype=torch.float64)
    half = (r - 0.5).float()  # exact: |r| < 2^22
    up = torch.tensor(float('inf'))
    y = torch.where(torch.remainder(r, 2) != 0, torch.nextafter(half, up), half)
    mid = (torch.nextafter(y, -up).double() + y.double()) / 2
    p = mid[codes.sub_(first).long()].mul_(scale.double()[..., None])
    x = p.float()
    x = torch.where(x.double() < p, torch.nextafter(x, up), x)
    return float_key(x).long()


def check_steps(evaluate, levels: torch.Tensor, thr: torch.Tensor, klo: torch.Tensor, khi: torch.Tensor) -> None:
    """Raise ValueError unless ``evaluate(keys)`` gives each step's level at both of its ends (with monotone codes:
    everywhere inside) and the thresholds ``thr`` (``[..., L - 1]``) do not decrease."""
    if bool((thr[..., 1:] < thr[..., :-1]).any()):
        raise ValueError('thresholds are not increasing: not a non-decreasing step function')
    lo, hi = _lead(klo, thr[..., :1].shape), _lead(khi, thr[..., :1].shape)
    starts = torch.cat([lo, torch.maximum(thr, lo)], dim=-1)
    ends = torch.minimum(torch.cat([thr - 1, hi], dim=-1), hi)
    used = starts <= ends
    for keys in (starts, ends):
        out = evaluate(torch.minimum(torch.maximum(keys, lo), hi))
        if not bool(torch.where(used, out == levels, torch.ones_like(used)).all()):
            raise ValueError('a step does not output its level: not a step function with these levels')


def window_search_(pos: torch.Tensor, ascending: torch.Tensor, keys: torch.Tensor, width: int,
                   scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Add to the int32 positions ``pos`` (in place) how many of ``ascending[pos : pos + width - 1]`` are at or
    below ``keys``: a branch-free binary search (``width`` a power of two, one gather and comparison per halving).
    The entries past a window must be above its key (or padding), and ``ascending`` long enough for every window.
    ``scratch``: an int32 buffer of ``pos``'s shape for the probes."""
    step = width >> 1
    while step:
        probe = torch.add(pos, step - 1, out=scratch)
        pos.add_(torch.index_select(ascending, 0, probe).le_(keys), alpha=step)
        step //= 2
    return pos


class StepErrorScorer:
    """Sum of ``(x - q_c(x))²`` over streamed float32 values, for every candidate ``c`` at once.

    Args:
        quantize: ``quantize(x, idx)`` fake-quantizes the float32 ``[K, M]`` tensor ``x``, row ``i`` with candidate
            ``idx[i]``; for every candidate a non-decreasing function of ``x`` whose outputs are ``levels``
            (unless ``codes`` is given).
        levels: ``[C, L]`` float32, each candidate's possible outputs in increasing order, or, with ``codes``,
            the output of each code.
        codes: optional ``codes(x, idx)``: the step index in ``[0, L)`` of each value, non-decreasing in ``x``,
            for quantizers whose output is not monotone (PTQ4ViT's twin ranges) but a function of the code.
        lo, hi: every scored value lies in ``[lo, hi]`` (the calibration minimum and maximum).
        bins: the most lookup bins (see :func:`lookup_bins`).

    Raises:
        ValueError: when a candidate is not a step function with these levels on ``[lo, hi]`` (the caller then
            scores candidate by candidate).
    """

    def __init__(self, quantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], levels: torch.Tensor,
                 lo: float, hi: float, bins: int = STEP_SCORER_BINS, codes=None):
        self.quantize = quantize
        self.codes = codes
        self.levels = levels.float()
        self.klo, self.khi = _key_of(lo), _key_of(hi)
        if not self.klo <= self.khi:
            raise ValueError(f'empty range [{lo}, {hi}]')
        n_cand, n_lev = self.levels.shape
        self.cands = torch.arange(n_cand)
        thr = self._thresholds()  # [C, L - 1]: first key of each step above the lowest
        self._check_steps(thr)
        # the cells between consecutive distinct thresholds of all candidates: a value's cell is the number of
        # thresholds at or below its key, and step l of candidate c spans cells [cell_edges[c, l], cell_edges[c, l + 1])
        self.all_thr = torch.unique(thr.flatten())
        self.cell_edges = torch.cat([torch.zeros(n_cand, 1, dtype=torch.long),
                                     torch.searchsorted(self.all_thr, thr, right=True),
                                     torch.full((n_cand, 1), len(self.all_thr) + 1, dtype=torch.long)], dim=1)
        self.lookup = lookup_bins(self.all_thr, self.klo, self.khi, bins)
        c = self.levels.double()
        # Σ(x - c)² over a step = Σx² - 2c·Σx + c²·n; Σx² summed over the steps is every value's, whatever the
        # candidate, so only n and Σx are summed per cell
        self.coeffs = torch.stack([c.square(), -2 * c])  # [2, C, L]
        self.values_seen = 0

    # -- set-up -------------------------------------------------------------------------------------------
    def _eval(self, keys: torch.Tensor) -> torch.Tensor:
        """Outputs of every candidate at ``[C, K]`` keys."""
        return self.quantize(key_float(keys), self.cands)

    def _thresholds(self) -> torch.Tensor:
        """``[C, L - 1]`` int64: the smallest key in ``[klo, khi]`` whose output reaches level ``l`` (or whose
        code reaches ``l``; ``khi + 1`` when none does)."""
        if self.codes is None:
            target = self.levels[:, 1:]

            def reached(keys):
                return self._eval(keys) >= target
        else:
            target = torch.arange(1, self.levels.shape[1], dtype=torch.float32)

            def reached(keys):
                return self.codes(key_float(keys), self.cands) >= target
        return step_thresholds(reached, self.levels, torch.tensor(self.klo), torch.tensor(self.khi))

    def _check_steps(self, thr: torch.Tensor) -> None:
        check_steps(self._eval, self.levels, thr, torch.tensor(self.klo), torch.tensor(self.khi))

    # -- scoring ------------------------------------------------------------------------------------------
    def errors(self, x: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor | None:
        """``[C]`` float64: every candidate's sum of squared errors over the float32 values ``x`` (any shape);
        None when a value lies outside ``[lo, hi]``. ``value_range``: bounds of ``x`` already known (min, max of
        a tensor ``x`` was taken from), else computed."""
        flat = x.detach().reshape(-1)
        if not flat.numel():
            return torch.zeros(self.levels.shape[0], dtype=torch.float64)
        lo, hi = value_range if value_range is not None else (float(v) for v in torch.aminmax(flat))
        if _key_of(lo) < self.klo or _key_of(hi) > self.khi:
            return None
        n_cells = len(self.all_thr) + 1
        sums = torch.zeros(2, n_cells, dtype=torch.float64)
        total_sq = torch.zeros((), dtype=torch.float64)
        # block by block through reused buffers: fresh tensors of the input's size cost more in page faults than
        # the arithmetic
        m = min(flat.numel(), SCORE_BLOCK)
        key, cell = workspace('key', m, torch.int32), workspace('cell', m, torch.int32)
        index, xd = workspace('index', m, torch.long), workspace('xd', m, torch.float64)
        ones = workspace('ones', m, torch.float64, fill=1.0)
        for start in range(0, flat.numel(), SCORE_BLOCK):
            xb = flat[start:start + SCORE_BLOCK]
            n = xb.numel()
            k, c, idx, d = key[:n], cell[:n], index[:n], xd[:n]
            float_key(xb, out=k)
            self.lookup.cells(k, out=c)
            idx.copy_(c)
            d.copy_(xb)
            sums[0].scatter_add_(0, idx, ones[:n])  # (scatter_add_ beats index_add_ and bincount here)
            sums[1].scatter_add_(0, idx, d)
            total_sq += torch.dot(d, d)
        self.values_seen += flat.numel()
        return (self.coeffs * self._per_step(sums, self.cell_edges)).sum((0, 2)).add_(total_sq)

    def info(self) -> dict:
        """What was scored: values, cells (between the thresholds of all candidates), lookup bins and the most
        thresholds in one bin."""
        return dict(values=self.values_seen, cells=len(self.all_thr) + 1, bins=self.lookup.nbins,
                    window=self.lookup.window)

    @staticmethod
    def _per_step(sums: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """``[K, C, L]``: count and Σx of each candidate's steps, from ``[K, B]`` sums over B ordered cells
        and each step's cell range ``[edges[c, l], edges[c, l + 1])``."""
        prefix = torch.zeros(sums.shape[0], sums.shape[1] + 1, dtype=sums.dtype)
        torch.cumsum(sums, 1, out=prefix[:, 1:])
        return prefix[:, edges[:, 1:]] - prefix[:, edges[:, :-1]]


class CellLookup:
    """The cell of int32 float keys among sorted thresholds: the number of thresholds at or below each key.

    Keys are split into bins of ``2^shift`` keys over the span of the thresholds inside ``[klo, khi]``;
    ``first[b]`` is the number of thresholds below bin ``b``, and the at most ``window`` thresholds inside a bin
    are counted by a branch-free binary search (``rounds`` gathers and comparisons). A key below the first bin or
    above the last is clamped into it: the thresholds that lie outside the bins are outside ``(klo, khi]``, so
    they are below (or above) every value anyway. Built by :func:`lookup_bins`.
    """

    def __init__(self, thresholds: torch.Tensor, shift: int, base: int, nbins: int, first: torch.Tensor,
                 window: int):
        self.shift, self.base, self.nbins, self.window = shift, base, nbins, window
        self.rounds = window.bit_length()
        self.first = first.to(torch.int32)
        # int32 thresholds padded with keys above every float's, so that a search never leaves the array
        pad = torch.full((1 << self.rounds, ), _INT32_MAX, dtype=torch.long)
        self.thresholds = torch.cat([thresholds.clamp(max=_INT32_MAX), pad]).to(torch.int32)

    def cells(self, keys: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """int32 cell of each int32 key of ``keys`` (1-D), written to ``out`` (an int32 tensor of that shape)."""
        n = keys.numel()
        b = torch.bitwise_right_shift(keys, self.shift, out=workspace('lookup_bin', n, torch.int32)[:n])
        pos = torch.index_select(self.first, 0, b.sub_(self.base).clamp_(0, self.nbins - 1), out=out)
        return window_search_(pos, self.thresholds, keys, 1 << self.rounds, scratch=b)


#: the most thresholds in one lookup bin that :func:`lookup_bins` aims for (two search rounds)
LOOKUP_WINDOW = 3
_INT32_MAX = 2**31 - 1


def lookup_bins(thresholds: torch.Tensor, klo: int, khi: int, max_bins: int = STEP_SCORER_BINS) -> CellLookup:
    """A :class:`CellLookup` for sorted distinct int64 ``thresholds`` and values with keys in ``[klo, khi]``: the
    coarsest bins (fewest, the smallest table) with at most ``LOOKUP_WINDOW`` thresholds in a bin, or the finest
    within ``max_bins`` (>= 4)."""
    inside = thresholds[(thresholds > klo) & (thresholds <= khi)]
    tlo, thi = (int(inside[0]), int(inside[-1])) if len(inside) else (klo, klo)
    # at most 2^j + 1 bins to start (65, or fewer within a small max_bins); each refinement at most doubles them
    shift = max(0, (thi - tlo).bit_length() - min(6, max(0, max_bins.bit_length() - 2)))
    while True:
        base = tlo >> shift
        nbins = (thi >> shift) - base + 1
        starts = (torch.arange(nbins + 1, dtype=torch.long) + base) << shift
        first = torch.searchsorted(thresholds, starts)  # thresholds below each bin's first key
        window = int((first[1:] - first[:-1]).max())
        if window <= LOOKUP_WINDOW or shift == 0 or 2 * nbins > max_bins:
            return CellLookup(thresholds, shift, base, nbins, first[:-1], window)
        shift -= 1
