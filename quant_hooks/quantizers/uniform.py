"""Uniform affine / symmetric quantizers with min/max, percentile and MSE (OMSE) range estimation."""
from __future__ import annotations

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice, check_max_samples, check_percentiles
from .functional import (affine_params, fake_quant_affine, group_quantiles, lp_error, quantize_affine, strided_columns,
                         uniform_qrange)
from .granularity import PerToken
from .observer import GroupObserver
from .registry import register_quantizer

RANGE_METHODS = ('minmax', 'percentile', 'mse')


@register_quantizer('uniform')
class UniformQuantizer(Quantizer):
    """Uniform fake quantizer ``x̂ = (clamp(round(x/Δ) + z, qmin, qmax) - z)·Δ``.

    Args:
        bits: bit width in [2, 16].
        granularity: ``per_tensor``, ``per_channel`` (any axis), ``per_head``, ``per_token`` (dynamic: Δ, z
            from each token's min/max at run time, no calibration) or ``per_token_static`` (one Δ, z per token
            position, calibrated).
        symmetric: signed codes ``[-2^(b-1), 2^(b-1)-1]`` with ``z = 0``; otherwise ``[0, 2^b-1]``.
        range_method: how the calibrated range is chosen:
            ``minmax``: running min/max over all observed batches (exact);
            ``percentile``: for each candidate p in ``percentiles``, ``hi = quantile(x, p)``,
            ``lo = quantile(x, 1-p)``; the candidate with the lowest L2 error of x̂ vs x (summed over batches)
            wins and its range is averaged over batches (RepQ-ViT / ADFQ-ViT code);
            ``mse``: OMSE / EasyQuant-style grid search of ``α·[min, max]`` for ``α`` in
            ``linspace(*alpha_range, search_steps)`` minimising the Lp error on a bounded, deterministic sample
            of the observed values.
        percentiles: candidates for ``percentile``.
        search_steps, alpha_range, error_p: grid for ``mse`` and the error norm.
        max_samples: values kept for the ``mse`` search, and used per batch to score the ``percentile``
            candidates, all groups together (a deterministic strided sample); bounds calibration memory.
    """

    def __init__(self, bits: int = 8, granularity='per_tensor', symmetric: bool = False,
                 range_method: str = 'minmax', percentiles=(0.999, 0.9999, 0.99999), search_steps: int = 100,
                 alpha_range=(0.01, 1.2), error_p: float = 2.0, max_samples: int = 1 << 18):
        super().__init__(bits, granularity)
        self.symmetric = bool(symmetric)
        self.range_method = check_choice(range_method, 'range_method', RANGE_METHODS)
        self.percentiles = check_percentiles(percentiles)
        if search_steps < 1 or not 0 < alpha_range[0] <= alpha_range[1]:
            raise QuantizerError(f'search_steps={search_steps}, alpha_range={alpha_range} are invalid: '
                                 'need search_steps >= 1 and 0 < alpha_range[0] <= alpha_range[1]')
        self.search_steps = int(search_steps)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.error_p = float(error_p)
        self.max_samples = check_max_samples(max_samples)
        self.qmin, self.qmax = uniform_qrange(self.bits, self.symmetric)
        if isinstance(self.granularity, PerToken) and self.granularity.dynamic:
            if self.range_method != 'minmax':
                raise QuantizerError(f'range_method={range_method!r} is invalid with dynamic per-token granularity: '
                                     "allowed values are ['minmax']")
            self.requires_calibration = False
        self.register_buffer('scale', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))
        self._reset_observer()

    # -- calibration ----------------------------------------------------------------------------------------
    def _reset_observer(self):
        self._obs = GroupObserver(self.granularity, (), self.max_samples, keep_samples=self.range_method == 'mse',
                                  where=lambda: self.where)
        self._cand_lo = self._cand_hi = self._cand_err = None  # percentile candidates: sums over batches

    def _observe(self, x):
        if not self.requires_calibration:
            return
        xg = self._obs.observe(x)
        if self.range_method == 'percentile':
            self._observe_percentile(xg)

    def _observe_percentile(self, xg):
        sample = strided_columns(xg, max(16, self.max_samples // xg.shape[0]))
        n_p = len(self.percentiles)
        qv = group_quantiles(xg, list(self.percentiles) + [1.0 - p for p in self.percentiles])
        hi, lo = qv[:, :n_p], qv[:, n_p:]  # [G, P]
        err = torch.stack([self._range_error(sample, lo[:, i], hi[:, i]) for i in range(n_p)], 1)
        if self._cand_lo is None:
            self._cand_lo, self._cand_hi, self._cand_err = lo, hi, err
        else:
            self._cand_lo += lo
            self._cand_hi += hi
            self._cand_err += err

    def _range_error(self, sample, lo, hi):
        scale, zp = affine_params(lo, hi, self.bits, self.symmetric)
        xq = fake_quant_affine(sample, scale[:, None], zp[:, None], self.qmin, self.qmax)
        return lp_error(sample, xq, self.error_p)

    def _compute_params(self):
        if not self.requires_calibration:
            return
        obs = self._obs
        if self.range_method == 'minmax':
            lo, hi = obs.lo, obs.hi
        elif self.range_method == 'percentile':
            best = self._cand_err.argmin(dim=1, keepdim=True)
            lo = self._cand_lo.gather(1, best)[:, 0] / obs.batches
            hi = self._cand_hi.gather(1, best)[:, 0] / obs.batches
        else:
            lo, hi = self._search_mse(obs.sample(), obs.lo, obs.hi)
        scale, zp = affine_params(lo, hi, self.bits, self.symmetric)
        self.scale = obs.reshape(scale)
        self.zero_point = obs.reshape(zp)

    def _search_mse(self, sample, lo, hi):
        alphas = torch.linspace(*self.alpha_range, self.search_steps).tolist()
        best_err = torch.full_like(lo, float('inf'))
        best_lo, best_hi = lo.clone(), hi.clone()
        for a in alphas:  # loop over the (small) candidate grid; vectorized over groups and values
            err = self._range_error(sample, lo * a, hi * a)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo * a, best_lo)
            best_hi = torch.where(better, hi * a, best_hi)
        return best_lo, best_hi

    # -- quantization ---------------------------------------------------------------------------------------
    def _dynamic_params(self, x):
        rows = self.granularity.rows(x)
        lo = rows.amin(dim=-1, keepdim=True)
        hi = rows.amax(dim=-1, keepdim=True)
        scale, zp = affine_params(lo.float(), hi.float(), self.bits, self.symmetric)
        ch = self.granularity.channel_axis
        if ch not in (-1, x.dim() - 1):
            scale, zp = scale.movedim(-1, ch), zp.movedim(-1, ch)
        return scale.to(x.dtype), zp.to(x.dtype)

    def params_for(self, x: torch.Tensor):
        """(scale, zero_point) that broadcast against ``x``."""
        if not self.requires_calibration:
            return self._dynamic_params(x)
        return self.scale.to(x.dtype), self.zero_point.to(x.dtype)

    def fake_quant(self, x):
        scale, zp = self.params_for(x)
        return fake_quant_affine(x, scale, zp, self.qmin, self.qmax)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (in ``[qmin, qmax]``), as a float tensor."""
        scale, zp = self.params_for(x)
        return quantize_affine(x, scale, zp, self.qmin, self.qmax)

    def extra_repr(self):
        return (f'{super().extra_repr()}, symmetric={self.symmetric}, range_method={self.range_method}')
