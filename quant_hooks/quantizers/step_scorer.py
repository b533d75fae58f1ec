"""Exact squared error of many candidate per-tensor quantizers at once, without quantizing every value once per
candidate.

A per-tensor uniform (or log, or twin) fake quantizer is a non-decreasing step function of ``x``: every float32
value between two consecutive thresholds gets the same output. Once the candidates of a search are known, each
candidate's thresholds are found exactly, on the float32 line, by bisection over the values the quantizer itself
produces (:class:`StepErrorScorer`). A tensor is then scored by a histogram of its values over fine bins of the
order-preserving integer key of float32 (:func:`float_key`): a bin that no threshold cuts lies in one step of
every candidate, so its count, sum and sum of squares give every candidate's error on it
(``Σ(x - c)² = Σx² - 2c·Σx + c²·n``, in float64; ``Σx²`` over all steps is the same for every candidate). The few values in bins that a threshold cuts are binned again,
by binary search, into the cells between consecutive thresholds of all candidates, where the same holds. The
result is the sum of quantizing every value with every candidate (up to float64 rounding of the sums), in a
handful of passes over the tensor instead of about five per candidate.
"""
from __future__ import annotations

from typing import Callable

import torch

from .workspace import workspace

#: tensors with fewer values are scored candidate by candidate (the histogram does not pay off)
STEP_SCORER_MIN_VALUES = 1 << 16
#: fewer candidates are scored one by one (a few passes each cost less than the histogram)
STEP_SCORER_MIN_CANDIDATES = 8
#: at most this many histogram bins (the key range of the calibration values is split into powers of two)
STEP_SCORER_BINS = 1 << 20
#: values per block of :meth:`StepErrorScorer.errors`
SCORE_BLOCK = 1 << 16


def step_scorer_bins(numel: int) -> int:
    """Histogram bins for tensors of ``numel`` values: about one per value, within [2^14, STEP_SCORER_BINS]
    (fewer bins cost less per tensor, more bins leave fewer values in cut bins)."""
    return max(1 << 14, min(STEP_SCORER_BINS, 1 << max(0, (numel - 1).bit_length())))


def affine_levels(scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``[C, L]`` outputs ``(k - z)·Δ`` of candidate affine quantizers for every code ``k`` in ``[qmin, qmax]``,
    computed as the forward computes them (float32 ``(k - z)`` times ``Δ``)."""
    codes = torch.arange(qmin, qmax + 1, dtype=torch.float32)
    return (codes[None, :] - zero_point.float()[:, None]) * scale.float()[:, None]


def build_step_scorer(quantize, levels: torch.Tensor, lo: float, hi: float, numel: int, codes=None):
    """A :class:`StepErrorScorer` for tensors of ``numel`` values, or False where the candidates are not step
    functions of these levels (the caller then scores candidate by candidate)."""
    try:
        return StepErrorScorer(quantize, levels, lo, hi, bins=step_scorer_bins(numel), codes=codes)
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
        bins: the most histogram bins.

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
        # bin = (key >> shift) - base: at most `bins` bins, none wider than a binade
        span = self.khi - self.klo + 1
        self.shift = min(23, max(0, (span - 1).bit_length() - max(1, bins - 1).bit_length()))
        self.base = self.klo >> self.shift
        self.nbins = (self.khi >> self.shift) - self.base + 1
        tb = (thr >> self.shift) - self.base
        inside = (thr > self.klo) & (thr <= self.khi)
        cut = inside & (thr != ((tb + self.base) << self.shift))
        self.cut_bins = torch.unique(tb[cut])
        self.cut = torch.zeros(self.nbins, dtype=torch.uint8)
        self.cut[self.cut_bins] = 1
        # bins [edges[c, l], edges[c, l + 1]) hold step l of candidate c (cut bins count as empty there)
        first = torch.where(thr <= self.klo, torch.zeros_like(tb), torch.where(thr > self.khi, self.nbins, tb))
        self.edges = torch.cat([torch.zeros(n_cand, 1, dtype=torch.long), first,
                                torch.full((n_cand, 1), self.nbins, dtype=torch.long)], dim=1)
        # values in cut bins: their cell among all thresholds (sorted keys) tells every candidate's step
        self.all_thr = torch.unique(thr.flatten())
        self.cell_edges = torch.cat([torch.zeros(n_cand, 1, dtype=torch.long),
                                     torch.searchsorted(self.all_thr, thr, right=True),
                                     torch.full((n_cand, 1), len(self.all_thr) + 1, dtype=torch.long)], dim=1)
        c = self.levels.double()
        # Σ(x - c)² over a step = Σx² - 2c·Σx + c²·n; Σx² summed over the steps is every value's, whatever the
        # candidate, so only n and Σx are binned
        self.coeffs = torch.stack([c.square(), -2 * c])  # [2, C, L]
        self.values_seen = 0
        self.values_cut = 0

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
        # block by block through reused buffers: fresh tensors of the input's size cost more in page faults than
        # the arithmetic
        sums = workspace('sums', 2 * self.nbins, torch.float64).view(2, self.nbins).zero_()
        total_sq = torch.zeros((), dtype=torch.float64)
        m = min(flat.numel(), SCORE_BLOCK)
        key, index = workspace('key', m, torch.int32), workspace('index', m, torch.long)
        xd, mask = workspace('xd', m, torch.float64), workspace('mask', m, torch.uint8)
        ones = workspace('ones', m, torch.float64, fill=1.0)
        cut_values = []
        for start in range(0, flat.numel(), SCORE_BLOCK):
            xb = flat[start:start + SCORE_BLOCK]
            n = xb.numel()
            k, idx, d = key[:n], index[:n], xd[:n]
            float_key(xb, out=k)
            idx.copy_(k.bitwise_right_shift_(self.shift).sub_(self.base))  # the bin (int32 work, int64 index)
            d.copy_(xb)
            sums[0].scatter_add_(0, idx, ones[:n])  # (scatter_add_ beats index_add_ and bincount here)
            sums[1].scatter_add_(0, idx, d)
            total_sq += torch.dot(d, d)
            if len(self.cut_bins):
                cut_values.append(xb.masked_select(torch.index_select(self.cut, 0, idx, out=mask[:n]).view(torch.bool)))
        self.values_seen += flat.numel()
        per_step = self._per_step(sums, self.edges, cut_bins=self.cut_bins)
        if cut_values:
            # cut bins count as empty above; their values are binned by the cells between all thresholds
            cv = torch.cat(cut_values)
            ck = float_key(cv).long()
            cv = cv.double()
            self.values_cut += ck.numel()
            cells = torch.searchsorted(self.all_thr, ck, right=True)
            cell_sums = torch.stack([torch.bincount(cells, minlength=len(self.all_thr) + 1).double(),
                                     torch.bincount(cells, weights=cv, minlength=len(self.all_thr) + 1)])
            per_step += self._per_step(cell_sums, self.cell_edges)
        return (self.coeffs * per_step).sum((0, 2)).add_(total_sq)

    def info(self) -> dict:
        """What the histogram scored: values, and those in cut bins (binned by binary search)."""
        return dict(values=self.values_seen, in_cut_bins=self.values_cut, bins=self.nbins)

    @staticmethod
    def _per_step(sums: torch.Tensor, edges: torch.Tensor, cut_bins: torch.Tensor | None = None) -> torch.Tensor:
        """``[K, C, L]``: count and Σx of each candidate's steps, from ``[K, B]`` sums over B ordered bins
        and each step's bin range ``[edges[c, l], edges[c, l + 1])``."""
        if cut_bins is not None and len(cut_bins):
            sums.index_fill_(1, cut_bins, 0.0)
        prefix = workspace('prefix', sums.shape[0] * (sums.shape[1] + 1), sums.dtype).view(sums.shape[0], -1)
        prefix[:, 0] = 0.0
        torch.cumsum(sums, 1, out=prefix[:, 1:])
        return prefix[:, edges[:, 1:]] - prefix[:, edges[:, :-1]]
