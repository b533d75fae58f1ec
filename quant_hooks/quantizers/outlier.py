"""ADFQ-ViT's Per-Patch Outlier-aware Quantizer (PPOQ) for post-LayerNorm activations."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Quantizer
from .errors import QuantizerError, check_choice, check_percentiles
from .functional import affine_params, fake_quant_affine, quantize_affine, shifted_codes_, uniform_qrange
from .granularity import PerToken, require_granularity
from .range_search import RangeSearch, error_sum, first_argmin
from .registry import register_quantizer


#: values per block of the dynamic form's row-blocked forward (its scratch block is reused)
PPOQ_BLOCK = 1 << 18


@register_quantizer('ppoq')
class OutlierAwareQuantizer(Quantizer):
    """Per-token uniform quantizer that keeps outliers ``|x| > α`` at full precision.

    ``x̂ = where(|x| > α, x, Q_t(x))``, with one ``(Δ_t, z_t)`` per token t estimated from the token's inliers
    only (``|x| <= α``). Two forms:

    * ``granularity='per_token'`` (dynamic, the default): ``Δ_t, z_t`` from each token's inlier min/max at run
      time, so any number of tokens works (detection images of any size, any window count). Needs no
      calibration; observing data only records the outlier ratio.
    * ``granularity='per_token_static'``: one calibrated ``(Δ_t, z_t)`` per token *position*, pooled over the
      batch and the channels, as the authors' code does; ties the quantizer to one token count (classification
      at a fixed resolution, Swin windows). Range by inlier min/max or by the per-token percentile search.

    Paper vs code choices:
        * the threshold is absolute (authors' code: ``α = 5`` for qkv inputs, ``--outlier`` for fc1 inputs,
          10 in the README example); it is not a fraction of the range.
        * the authors' code calibrates static per-position scales with a percentile search (per token, the
          candidate ``p`` in {0.999, 0.9999, 0.99999} with the lowest L2 error of the inliers); that is
          ``granularity='per_token_static', range_method='percentile'``. The dynamic form is this project's
          extension for variable token counts and uses the inlier min/max (a per-token percentile at run time
          would cost a sort per token).
        * a token with no inlier keeps all its values (its scale is irrelevant and set to the smallest scale).
        * static form, ``outlier_stats``: this project estimates each position's range from its inliers only
          (``'exclude'``, default: the quantizer keeps outliers in float, so they should not widen the range);
          the authors' code zeroes the outliers (``x · 1[|x| <= α]``) and computes the statistics, the
          percentile candidates and their L2 error on that tensor, so every outlier counts as a 0 in its token's
          statistics (``'zero'``). With ``'zero'`` the range always contains 0 and a token's quantiles shift
          towards 0 by the share of its outliers.
        * the percentile candidates are quantiles of all calibration values of a position (see
          ``quantile_mode``) and are scored on all of them, in a second pass over the calibration data.

    The fraction of outliers seen during calibration is kept in the ``outlier_ratio`` buffer (NaN when nothing
    was observed); with ``track_outliers`` the ratio of the last quantized tensor is kept in
    ``last_outlier_ratio`` (costs a reduction per call).

    Args:
        bits: bit width of the inlier codes, in [2, 16].
        granularity: ``per_token`` (dynamic) or ``per_token_static``; ``dict(type='per_token', token_axis=...,
            channel_axis=...)`` for other layouts.
        threshold: α >= 0; values with ``|x| > α`` are outliers.
        symmetric: signed codes with ``z = 0`` instead of the asymmetric ``[0, 2^b - 1]``.
        range_method: ``minmax`` or ``percentile`` (static form only).
        percentiles: candidates for ``percentile``.
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored.
        track_outliers: record ``last_outlier_ratio`` at every call.
        outlier_stats: static form: ``exclude`` (statistics of the inliers) or ``zero`` (authors' code:
            outliers count as zeros), see above.
        quantile_mode: ``all`` (quantiles of all calibration values) or ``per_batch_mean``.
    """

    def __init__(self, bits: int = 8, granularity='per_token', threshold: float = 5.0, symmetric: bool = False,
                 range_method: str = 'minmax', percentiles=(0.999, 0.9999, 0.99999), max_samples: int | None = None,
                 track_outliers: bool = False, outlier_stats: str = 'exclude', quantile_mode: str = 'all'):
        super().__init__(bits, granularity)
        require_granularity(self.granularity, dict(per_token=PerToken, per_token_static=PerToken), 'ppoq')
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise QuantizerError(f'threshold={threshold!r} is invalid: allowed values are floats >= 0') from None
        if math.isnan(threshold) or threshold < 0:
            raise QuantizerError(f'threshold={threshold!r} is invalid: allowed values are floats >= 0 '
                                 '(an absolute bound on |x|; use inf for no outliers)')
        self.threshold = threshold
        self.symmetric = bool(symmetric)
        self.qmin, self.qmax = uniform_qrange(self.bits, self.symmetric)
        self.range_method = check_choice(range_method, 'range_method', ('minmax', 'percentile'))
        if self.granularity.dynamic and self.range_method != 'minmax':
            raise QuantizerError(f"range_method={range_method!r} is invalid with the dynamic per-token form: "
                                 "allowed values are ['minmax']")
        self.percentiles = check_percentiles(percentiles)
        self.max_samples = max_samples
        self.quantile_mode = quantile_mode
        self.outlier_stats = check_choice(outlier_stats, 'outlier_stats', ('exclude', 'zero'))
        self.track_outliers = bool(track_outliers)
        self.last_outlier_ratio = float('nan')
        self.requires_calibration = not self.granularity.dynamic
        self.register_buffer('scale', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))
        self.register_buffer('outlier_ratio', torch.tensor(float('nan')))
        self._reset_observer()

    @property
    def dynamic(self) -> bool:
        return self.granularity.dynamic

    # -- calibration ----------------------------------------------------------------------------------------
    def _reset_observer(self):
        self._n_outliers = 0
        self._n_values = 0
        pct = self.range_method == 'percentile'
        levels = list(self.percentiles) + [1.0 - p for p in self.percentiles] if pct else ()
        scored = pct and len(self.percentiles) > 1
        self._search = RangeSearch(self.granularity if not self.dynamic else PerToken(dynamic_=False), levels,
                                   'after_stats' if scored else 'none', self.max_samples, self.quantile_mode)
        self._cand_lo = self._cand_hi = None

    @property
    def calibration_passes(self):
        return 1 if self.dynamic else self._search.passes_planned

    def _observe(self, x):
        outliers = x.abs() > self.threshold
        if self._search.stage == 'stats':
            self._n_outliers += int(outliers.sum())
            self._n_values += x.numel()
        if self.dynamic:
            return
        g = self.granularity
        n_tok = x.shape[g.token_axis]
        if self._search.param_shape is not None and n_tok != self._search.param_shape[0]:
            raise QuantizerError(f'{self.where}: observed {n_tok} token positions, earlier batches had '
                                 f'{self._search.param_shape[0]}; the static per-token form needs a fixed token count '
                                 "(use granularity='per_token' for any token count)")
        if self.outlier_stats == 'zero':
            scored = self._search.observe(x.masked_fill(outliers, 0.0), self.where)
        else:
            scored = self._search.observe(x, self.where, valid=~outliers)
        if scored is not None:
            xs, weight = scored
            errs = []
            for i in range(self._cand_lo.shape[1]):  # loop over the few candidates; vectorized over tokens, values
                scale, zp = affine_params(self._cand_lo[:, i], self._cand_hi[:, i], self.bits, self.symmetric)
                errs.append(error_sum(xs, fake_quant_affine(xs, scale[:, None], zp[:, None], self.qmin, self.qmax),
                                      2.0, weight))
            self._search.accumulate(torch.stack(errs, dim=1))

    def _end_pass(self):
        if self.dynamic:
            return False
        more = self._search.end_pass(self.where)
        if self._cand_lo is None and self._search.ready:
            s = self._search
            if self.range_method == 'minmax':
                self._cand_lo, self._cand_hi = s.lo[:, None], s.hi[:, None]
            else:
                n_p = len(self.percentiles)
                qv = s.quantiles()
                # a position without inliers has quantiles 0: give it the empty range min/max reports
                empty = (s.count == 0)[:, None]
                self._cand_lo = qv[:, n_p:].masked_fill(empty, math.inf)
                self._cand_hi = qv[:, :n_p].masked_fill(empty, -math.inf)
                self._cand_lo, self._cand_hi = _no_inlier_to_zero(self._cand_lo, self._cand_hi)
        return more

    def _compute_params(self):
        if self._n_values:
            self.outlier_ratio = torch.tensor(self._n_outliers / self._n_values)
        if self.dynamic:
            return
        s = self._search
        if s.scores is None:
            best = torch.zeros(self._cand_lo.shape[0], 1, dtype=torch.long, device=self._cand_lo.device)
        else:
            best = first_argmin(s.scores)[:, None]
        self._best = best[:, 0]
        lo, hi = _no_inlier_to_zero(self._cand_lo.gather(1, best)[:, 0], self._cand_hi.gather(1, best)[:, 0])
        scale, zp = affine_params(lo, hi, self.bits, self.symmetric)
        self.scale = s.reshape(scale)
        self.zero_point = s.reshape(zp)

    def _search_info(self):
        info = dict(outlier_ratio=float(self.outlier_ratio))
        if self.dynamic:
            return dict(range_method='dynamic', **info)
        info.update(range_method=self.range_method, outlier_stats=self.outlier_stats, **self._search.info())
        if self.range_method == 'percentile':
            counts = torch.bincount(self._best, minlength=len(self.percentiles)).tolist()
            info['percentile_counts'] = dict(zip(map(str, self.percentiles), counts))
        return info

    # -- quantization ---------------------------------------------------------------------------------------
    def params_for(self, x: torch.Tensor, outliers: torch.Tensor | None = None):
        """(scale, zero_point) that broadcast against ``x``: per token row (dynamic) or per position (static)."""
        if not self.dynamic:
            if self.scale.shape[0] != x.shape[self.granularity.token_axis]:
                raise QuantizerError(f'{self.where}: input has {x.shape[self.granularity.token_axis]} tokens but the '
                                     f'static per-token form was calibrated for {self.scale.shape[0]}; use '
                                     "granularity='per_token' for any token count")
            return self.scale.to(x.dtype), self.zero_point.to(x.dtype)
        if outliers is None:
            outliers = x.abs() > self.threshold
        ch = self.granularity.channel_axis
        lo = x.masked_fill(outliers, math.inf).amin(dim=ch, keepdim=True)
        hi = x.masked_fill(outliers, -math.inf).amax(dim=ch, keepdim=True)
        return self._row_params(lo, hi, x.dtype)

    def _row_params(self, lo, hi, dtype):
        lo, hi = _no_inlier_to_zero(lo.float(), hi.float())
        scale, zp = affine_params(lo, hi, self.bits, self.symmetric)
        return scale.to(dtype), zp.to(dtype)

    def fake_quant(self, x):
        if self.track_outliers:
            self.last_outlier_ratio = float((x.detach().abs() > self.threshold).sum()) / max(1, x.numel())
        if torch.is_grad_enabled() and x.requires_grad:
            outliers = x.abs() > self.threshold
            scale, zp = self.params_for(x, outliers)
            return torch.where(outliers, x, fake_quant_affine(x, scale, zp, self.qmin, self.qmax))
        # No autograd: x̂ = Q(x_in) + x_out, with x_out = hardshrink(x, α) (the outliers, 0 elsewhere) and
        # x_in = x - x_out (the inliers, 0 at the outliers), both exact. Inliers give Q(x) + 0 and outliers
        # Q(0) + x = x as long as Q(0) = 0, i.e. the zero-point lies in the code range; no boolean mask is needed
        # (boolean selects are the slowest kernels here).
        # The last step, x_out + codes·Δ, is one addcmul: one of the two terms is exactly 0 at every position.
        if self.dynamic:
            ch = self.granularity.channel_axis
            if x.is_contiguous() and ch in (-1, x.dim() - 1) and x.dim() >= 1 and x.numel():
                return self._fake_quant_dynamic_rows(x.reshape(-1, x.shape[-1])).view(x.shape)
            return self._fake_quant_dynamic_block(x, torch.empty_like(x), torch.empty_like(x), ch)
        x_out = F.hardshrink(x, self.threshold)
        x_in = torch.sub(x, x_out)
        scale, zp = self.params_for(x)
        if bool(((zp < self.qmin) | (zp > self.qmax)).any()):
            return self._fake_quant_masked(x)
        return x_out.addcmul_(shifted_codes_(x_in.div_(scale), zp, self.qmin, self.qmax), scale)

    def _fake_quant_dynamic_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The dynamic form of ``[R, C]`` rows, a block of rows at a time (about :data:`PPOQ_BLOCK` values) with
        one reused scratch block, so that the passes of a block stay in cache."""
        out = torch.empty_like(rows)
        per_block = max(1, PPOQ_BLOCK // max(1, rows.shape[1]))
        scratch = torch.empty((min(rows.shape[0], per_block), rows.shape[1]), dtype=rows.dtype, device=rows.device)
        for start in range(0, rows.shape[0], per_block):
            block = rows[start:start + per_block]
            self._fake_quant_dynamic_block(block, out[start:start + per_block], scratch[:block.shape[0]], -1)
        return out

    def _fake_quant_dynamic_block(self, x, out, scratch, ch):
        """Dynamic form of ``x`` written into ``out`` (``scratch``: a tensor of ``x``'s shape), no autograd."""
        x_out = torch.ops.aten.hardshrink.out(x, self.threshold, out=out)
        x_in = torch.sub(x, x_out, out=scratch)
        # (amin, amax: torch.aminmax with a dim is 7x slower on CPU)
        lo, hi = x_in.amin(dim=ch, keepdim=True), x_in.amax(dim=ch, keepdim=True)
        # a bound equal to 0 may come from a zeroed outlier rather than an inlier: take the exact path then
        if not self.symmetric and bool((((lo == 0) & (hi > 0)) | ((hi == 0) & (lo < 0))).any()):
            return out.copy_(self._fake_quant_masked(x))
        scale, zp = self._row_params(lo, hi, x.dtype)
        if x.dtype != torch.float32:
            return x_out.addcmul_(shifted_codes_(x_in.div_(scale), zp, self.qmin, self.qmax), scale)
        t = x_in.div_(scale).round_()
        if not self.symmetric:
            # lo <= x gives round(x/Δ) >= round(lo/Δ) = -z: no code falls below 0; float rounding of Δ can lift
            # the top one past 2^b - 1. Symmetric: |x/Δ| <= (2^(b-1) - 1)(1 + 2^-23), always in range.
            t.clamp_(max=self.qmax - zp)
        return x_out.addcmul_(t, scale)

    def _fake_quant_masked(self, x):
        """The same result with an explicit outlier mask (for zero-points outside the code range)."""
        outliers = x.abs() > self.threshold
        scale, zp = self.params_for(x, outliers)
        xq = fake_quant_affine(x, scale, zp, self.qmin, self.qmax)
        return torch.where(outliers, x, xq, out=xq)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer codes of the inliers in ``[qmin, qmax]`` (outlier entries hold the clamped code), outlier mask)."""
        outliers = x.abs() > self.threshold
        scale, zp = self.params_for(x, outliers)
        return quantize_affine(x, scale, zp, self.qmin, self.qmax), outliers

    def extra_repr(self):
        form = 'dynamic' if self.dynamic else f'static, range_method={self.range_method}'
        return f'{super().extra_repr()}, threshold={self.threshold}, symmetric={self.symmetric}, {form}'


def _no_inlier_to_zero(lo: torch.Tensor, hi: torch.Tensor):
    """Rows without inliers have ``lo = inf, hi = -inf``: give them an empty range at 0."""
    empty = lo > hi
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
