"""Bounded, deterministic calibration statistics shared by the quantizers that search their parameters."""
from __future__ import annotations

import torch

from .errors import QuantizerError, check_max_samples
from .functional import group_quantiles, strided_columns
from .granularity import Granularity


class GroupObserver:
    """Per-group statistics of a stream of tensors.

    For every group of a granularity (one group per tensor, channel, head or token position) it keeps the
    running min and max, the mean over batches of exact per-batch quantiles, and a bounded, evenly strided
    sample of the observed values (deterministic: the same batches give the same sample). The sample holds at
    most about ``max_samples`` values, all groups together.

    Args:
        granularity: a static granularity; its ``grouped`` view defines the groups.
        quantiles: levels whose per-batch values are averaged (for percentile candidates).
        max_samples: total number of values kept in the sample, all groups together.
        keep_samples: keep the sample at all (off for quantizers that only need min/max/quantiles).
        where: name used in error messages, or a callable returning it.
    """

    def __init__(self, granularity: Granularity, quantiles=(), max_samples: int = 1 << 20, keep_samples: bool = True,
                 where='observer'):
        self.granularity = granularity
        self.quantiles = tuple(float(q) for q in quantiles)
        self.max_samples = check_max_samples(max_samples)
        self.keep_samples = keep_samples
        self.where = where
        self.lo = self.hi = None
        self.param_shape = None
        self.batches = 0
        self._quantile_sums = None
        self._pool: list[torch.Tensor] = []

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """Record ``x``; returns its ``[G, S]`` float view."""
        shape = self.granularity.param_shape(x)
        if self.param_shape is not None and shape != self.param_shape:
            where = self.where() if callable(self.where) else self.where
            raise QuantizerError(f'{where}: observed parameter shape {shape} differs from earlier batches '
                                 f'{self.param_shape}; a {self.granularity.name} quantizer needs a fixed size along '
                                 'its axis')
        self.param_shape = shape
        xg = self.granularity.grouped(x).float()
        lo, hi = xg.amin(dim=1), xg.amax(dim=1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self.batches += 1
        if self.quantiles:
            qv = group_quantiles(xg, self.quantiles)
            self._quantile_sums = qv if self._quantile_sums is None else self._quantile_sums + qv
        if self.keep_samples:
            per_group = max(16, self.max_samples // xg.shape[0])
            self._pool.append(strided_columns(xg, max(16, per_group // 8)).clone())
            if sum(s.shape[1] for s in self._pool) > per_group:  # thin the pool evenly, deterministically
                self._pool = [strided_columns(torch.cat(self._pool, dim=1), per_group).clone()]
        return xg

    @property
    def num_groups(self) -> int:
        return 0 if self.lo is None else self.lo.shape[0]

    def mean_quantiles(self) -> torch.Tensor:
        """``[G, len(quantiles)]``: each quantile averaged over batches."""
        return self._quantile_sums / self.batches

    def sample(self) -> torch.Tensor:
        """The kept sample, ``[G, S]``."""
        return torch.cat(self._pool, dim=1)

    def reshape(self, v: torch.Tensor) -> torch.Tensor:
        """A per-group vector ``[G]`` reshaped to the parameter shape that broadcasts against inputs."""
        return v.reshape(self.param_shape)
