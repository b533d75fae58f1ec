"""Exact per-group sums of many candidate quantizers whose parameters differ per group (channel-wise ranges).

A histogram (:class:`~.step_scorer.StepErrorScorer`) needs one set of thresholds for all values; with a range
per channel every channel has its own. Here each group's values are sorted once per tensor (as the
order-preserving int32 keys of :func:`~.step_scorer.float_key`), and every step
boundary of every candidate (found exactly on the float32 line, :func:`~.step_scorer.step_thresholds`) is
looked up in the sorted values by binary search: the count and the sum of the values of each step come from
prefix sums. Sorting costs about as much as two or three candidates quantized value by value, whatever the
number of candidates.
"""
from __future__ import annotations

from typing import Callable

import torch

from .step_scorer import check_steps, float_key, key_float, step_thresholds

#: groups with fewer values per tensor are scored candidate by candidate
SORTED_SCORER_MIN_VALUES = 1 << 10


class SortedStepSums:
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
        g, k, n_lev = self.levels.shape
        # the first key of each step (int32: sorting keys is faster than sorting floats, and orders -0.0 below +0.0
        # as the thresholds do)
        self.bounds = thr.reshape(g, k * (n_lev - 1)).to(torch.int32).contiguous()
        self.klo, self.khi = klo.to(torch.int32), khi.to(torch.int32)

    def sums(self, xs: torch.Tensor):
        """``(n, s1, s2)`` of the float32 ``[G, S]`` values ``xs``: ``n`` and ``s1`` the count and sum of each
        step (``[G, K, L]``, float64), ``s2`` the sum of squares of each group (``[G]``); None when a value lies
        outside its group's range."""
        keys = float_key(xs).sort(dim=1).values
        if bool((keys[:, 0] < self.klo).any() | (keys[:, -1] > self.khi).any()):
            return None
        g, s = keys.shape
        _, k, n_lev = self.levels.shape
        below = torch.searchsorted(keys, self.bounds).reshape(g, k, n_lev - 1)  # values before each step
        edges = torch.cat([torch.zeros(g, k, 1, dtype=torch.long), below,
                           torch.full((g, k, 1), s, dtype=torch.long)], dim=2)
        srt = key_float(keys).double()
        prefix = torch.nn.functional.pad(srt.cumsum(1), (1, 0))
        at = prefix.gather(1, edges.reshape(g, -1)).reshape(g, k, n_lev + 1)
        return edges.diff(dim=2).double(), at.diff(dim=2), srt.square_().sum(1)
