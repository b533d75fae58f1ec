"""Uniform affine / symmetric quantizers with min/max, percentile and MSE (OMSE) range estimation."""
from __future__ import annotations

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice, check_percentiles
from .functional import affine_params, fake_quant_affine, quantize_affine, uniform_qrange
from .granularity import PerToken
from .range_search import RangeSearch, affine_candidate_errors, alpha_grid, first_argmin
from .registry import register_quantizer
from .step_scorer import affine_levels, build_step_scorer, step_scorer_applies
from .workspace import release_workspace

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
            ``minmax``: min/max over all observed values (one pass);
            ``percentile``: for each candidate p in ``percentiles``, ``hi = quantile(x, p)``,
            ``lo = quantile(x, 1-p)`` over all calibration values (see ``quantile_mode``); the candidate with the
            lowest Lp error of x̂ vs x over all calibration values wins (RepQ-ViT / ADFQ-ViT code);
            ``mse``: OMSE / EasyQuant-style grid search of ``α·[min, max]`` for ``α`` in
            ``linspace(*alpha_range, search_steps)`` minimising the Lp error over all calibration values.
            Both searches score their candidates in a second pass over the calibration data
            (:class:`~.range_search.RangeSearch`); per tensor with the L2 error, large tensors are scored for
            every candidate at once from a histogram (:class:`~.step_scorer.StepErrorScorer`, the same sums).
        percentiles: candidates for ``percentile``.
        search_steps, alpha_range: grid for ``mse``; error_p: the error norm p.
        max_samples: ``None`` (default): every value is scored; an integer: a strided sample of at most that
            many values of each observed tensor is scored (the explicit, cheaper option).
        quantile_mode: ``all`` (default): quantiles of all calibration values, whatever the batch size;
            ``per_batch_mean``: the mean over observed tensors of each tensor's quantiles.
    """

    def __init__(self, bits: int = 8, granularity='per_tensor', symmetric: bool = False,
                 range_method: str = 'minmax', percentiles=(0.999, 0.9999, 0.99999), search_steps: int = 100,
                 alpha_range=(0.01, 1.2), error_p: float = 2.0, max_samples: int | None = None,
                 quantile_mode: str = 'all'):
        super().__init__(bits, granularity)
        self.symmetric = bool(symmetric)
        self.range_method = check_choice(range_method, 'range_method', RANGE_METHODS)
        self.percentiles = check_percentiles(percentiles)
        self.alphas = alpha_grid(alpha_range, search_steps)
        self.search_steps = int(search_steps)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.error_p = float(error_p)
        self.max_samples = max_samples
        self.quantile_mode = quantile_mode
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
        pct = self.range_method == 'percentile'
        levels = list(self.percentiles) + [1.0 - p for p in self.percentiles] if pct else ()
        scored = self.range_method == 'mse' or (pct and len(self.percentiles) > 1)
        self._search = RangeSearch(self.granularity, levels, 'after_stats' if scored else 'none', self.max_samples,
                                   self.quantile_mode)
        self._cand_lo = self._cand_hi = None
        self._scorer = None

    @property
    def calibration_passes(self):
        return self._search.passes_planned if self.requires_calibration else 1

    def _observe(self, x):
        if not self.requires_calibration:
            return
        scored = self._search.observe(x, self.where)
        if scored is not None:
            self._search.accumulate(self._candidate_errors(*scored))

    def _end_pass(self):
        if not self.requires_calibration:
            return False
        more = self._search.end_pass(self.where)
        if self._search.stage == 'score' and self._cand_lo is None:
            self._cand_lo, self._cand_hi = self._candidates()
        return more

    def _candidates(self):
        """``[G, C]`` candidate ranges (lo, hi)."""
        s = self._search
        if self.range_method == 'percentile':
            n_p = len(self.percentiles)
            qv = s.quantiles()
            return qv[:, n_p:], qv[:, :n_p]
        if self.range_method == 'mse':
            a = torch.tensor(self.alphas, device=s.lo.device)[None, :]
            return s.lo[:, None] * a, s.hi[:, None] * a
        return s.lo[:, None], s.hi[:, None]

    def _step_scorer(self, xs, weight):
        """The histogram scorer of the current candidates where it applies to ``xs``, else None."""
        if not step_scorer_applies(xs, self._cand_lo.shape[1], weight, self.error_p):
            return None
        if self._scorer is None:
            scale, zp = affine_params(self._cand_lo[0], self._cand_hi[0], self.bits, self.symmetric)

            def quantize(x, idx):
                return fake_quant_affine(x, scale[idx, None], zp[idx, None], self.qmin, self.qmax)

            self._scorer = build_step_scorer(quantize, affine_levels(scale, zp, self.qmin, self.qmax),
                                             float(self._search.lo[0]), float(self._search.hi[0]))
        return self._scorer or None

    def _candidate_errors(self, xs, weight):
        """``[G, C]``: the Lp error of each candidate range, summed over the values ``xs`` (``[G, S]``)."""
        scorer = self._step_scorer(xs, weight)
        # None: a value outside the calibrated range (xs is x or a sample of it: x's range bounds it)
        errors = None if scorer is None else scorer.errors(xs, self._observed_range)
        if errors is not None:
            return errors[None, :]
        scale, zp = affine_params(self._cand_lo, self._cand_hi, self.bits, self.symmetric)
        return affine_candidate_errors(xs, scale, zp, self.qmin, self.qmax, self.error_p, weight)

    def _compute_params(self):
        if not self.requires_calibration:
            return
        if self._scorer:
            release_workspace()
        s = self._search
        if self._cand_lo is None:
            self._cand_lo, self._cand_hi = self._candidates()
        best = torch.zeros(self._cand_lo.shape[0], 1, dtype=torch.long, device=self._cand_lo.device)
        if s.scores is not None:
            best = first_argmin(s.scores)[:, None]
        lo = self._cand_lo.gather(1, best)[:, 0]
        hi = self._cand_hi.gather(1, best)[:, 0]
        scale, zp = affine_params(lo, hi, self.bits, self.symmetric)
        self.scale = s.reshape(scale)
        self.zero_point = s.reshape(zp)
        self._best = best[:, 0]

    def _search_info(self):
        if not self.requires_calibration:
            return dict(range_method='dynamic')
        info = dict(range_method=self.range_method, **self._search.info())
        if self._scorer:
            info['histogram_scored'] = self._scorer.info()
        if self._search.scores is not None:
            choice = self._best.cpu()
            key = 'percentile' if self.range_method == 'percentile' else 'alpha'
            values = self.percentiles if self.range_method == 'percentile' else self.alphas
            picked = torch.tensor(values)[choice]
            info[key] = float(picked) if picked.numel() == 1 else dict(
                min=float(picked.min()), max=float(picked.max()), mean=float(picked.mean()))
        return info

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
