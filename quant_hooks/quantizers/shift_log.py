"""ADFQ-ViT's Shift-Log2 quantizer for post-GELU activations (fc2 inputs)."""
from __future__ import annotations

import math

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice, check_percentiles
from .functional import MIN_SCALE, log_codes, log_fake_quant, log_fake_quant_per_tensor
from .granularity import PerTensor, require_granularity
from .range_search import RangeSearch, error_sum, first_argmin
from .registry import register_quantizer

SHIFT_FORMS = ('paper', 'code')


@register_quantizer('shift_log2')
class ShiftLog2Quantizer(Quantizer):
    """Shift all values into the positive region, then log-quantize.

    ``x' = max(x - s, 0) + ε``, codes ``q = clamp(round(-k·log2(x'/Δ)), 0, 2^b - 1)``, ``x̂ = Δ·2^(-q/k) + s - ε'``.

    Forms (``form``):

    * ``'paper'`` (ADFQ-ViT paper): base 2 (``k = 1``); codes are clamped, so the smallest values take the
      smallest level; ``x̂ = 2^(-q)·Δ + s`` (``ε' = 0``).
    * ``'code'`` (authors' code): base √2 (``k = 2``); unclamped codes ``>= 2^b`` map to ``x̂' = 0``;
      ``x̂ = x̂' + s - ε`` (the code's ``+1e-6`` is undone on the way back). The code's bit-shift form
      ``2^(-ceil(q/2))·(1 + (√2 - 1)·(q mod 2))·Δ`` equals ``Δ·2^(-q/2)``, computed with one ``exp2``.

    Shift ``s`` (``shift``):

    * ``'current'``: ``s = min(x)`` of the tensor being quantized (authors' code; costs a reduction per call
      and is not a static parameter);
    * ``'calibrated'``: the minimum seen during calibration, a constant (hardware-friendly);
    * a float: that constant (GELU's minimum is about -0.17, so ``shift=-0.17`` shifts by +0.17).

    With a constant shift, values below ``s`` are clamped to ``s`` (``x' = ε``). Δ is chosen by
    ``range_method``: ``'percentile'`` (authors' code: for p in ``percentiles``, Δ = quantile(x', p), keep the
    one with the lowest L2 error of x̂' vs x'; quantiles and errors over all calibration values, the errors in a
    second pass once the shift is known) or ``'minmax'`` (Δ = max(x')).

    Args:
        bits: bit width in [2, 16].
        form: ``paper`` or ``code``.
        shift: ``current``, ``calibrated`` or a float.
        eps: ε added after the shift (authors' code: 1e-6).
        range_method: ``percentile`` or ``minmax``.
        percentiles: candidates for ``percentile``.
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored.
        quantile_mode: ``all`` (quantiles of all calibration values) or ``per_batch_mean``.
    """

    def __init__(self, bits: int = 4, form: str = 'paper', shift='calibrated', eps: float = 1e-6,
                 range_method: str = 'percentile', percentiles=(0.999, 0.9999, 0.99999),
                 max_samples: int | None = None, quantile_mode: str = 'all'):
        super().__init__(bits, 'per_tensor')
        require_granularity(self.granularity, dict(per_tensor=PerTensor), 'shift_log2')
        self.form = check_choice(form, 'form', SHIFT_FORMS)
        self.levels_per_octave = 1 if self.form == 'paper' else 2
        if isinstance(shift, str):
            self.shift_mode = check_choice(shift, 'shift', ('current', 'calibrated'))
            const = 0.0
        elif isinstance(shift, (int, float)) and not isinstance(shift, bool) and math.isfinite(shift):
            self.shift_mode = 'constant'
            const = float(shift)
        else:
            raise QuantizerError(f"shift={shift!r} is invalid: allowed values are 'current', 'calibrated' or a "
                                 'finite float')
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise QuantizerError(f'eps={eps!r} is invalid: allowed values are floats >= 0')
        self.eps = float(eps)
        self.range_method = check_choice(range_method, 'range_method', ('percentile', 'minmax'))
        self.percentiles = check_percentiles(percentiles)
        self.max_samples = max_samples
        self.quantile_mode = quantile_mode
        self.register_buffer('scale', torch.empty(0))
        self.register_buffer('shift', torch.tensor(const))
        self._reset_observer()

    # -- calibration ----------------------------------------------------------------------------------------
    def _reset_observer(self):
        pct = self.range_method == 'percentile'
        self._search = RangeSearch(PerTensor(), self.percentiles if pct else (),
                                   'after_stats' if pct and len(self.percentiles) > 1 else 'none', self.max_samples,
                                   self.quantile_mode)
        self._cands = None
        self._s = None

    @property
    def calibration_passes(self):
        return self._search.passes_planned

    def _observed_values(self, x):
        """``[1, S]`` values the search sees: ``x``, or ``x - min(x)`` with the current-tensor shift."""
        v = x.reshape(1, -1).float()
        return v - v.min() if self.shift_mode == 'current' else v

    def _observe(self, x):
        scored = self._search.observe(self._observed_values(x), self.where, grouped=True)
        if scored is not None:
            xs = (scored[0] - self._s).clamp_min_(0).add_(self.eps)  # x' = v - s + ε
            self._search.accumulate(torch.stack([error_sum(xs, self._fq_shifted(xs, c.clamp_min(MIN_SCALE)))
                                                 for c in self._cands], dim=1))

    def _end_pass(self):
        more = self._search.end_pass(self.where)
        if self._cands is None and self._search.ready:
            srch = self._search
            if self.shift_mode == 'calibrated':
                self.shift = srch.lo.reshape(()).clone()
            # observed values v are x (constant shifts) or x - min(x) (current shift); x' = v - s + eps
            self._s = 0.0 if self.shift_mode == 'current' else float(self.shift)
            top = srch.hi[:, None] if self.range_method == 'minmax' else srch.quantiles()
            self._cands = ((top[0] - self._s).clamp_min(0) + self.eps)
        return more

    def _compute_params(self):
        srch = self._search
        self._best = 0 if srch.scores is None else int(first_argmin(srch.scores)[0])
        self.scale = self._cands[self._best].clamp_min(MIN_SCALE).reshape(())

    def _search_info(self):
        info = dict(range_method=self.range_method, **self._search.info())
        if self.range_method == 'percentile':
            info['percentile'] = self.percentiles[self._best]
        return info

    # -- quantization ---------------------------------------------------------------------------------------
    def _fq_shifted(self, xs: torch.Tensor, scale: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Quantize-dequantize the shifted values ``x'`` (``inplace``: ``xs`` is a scratch tensor)."""
        return log_fake_quant(xs, scale, self.bits, self.levels_per_octave, self.form == 'code', inplace=inplace)

    def current_shift(self, x: torch.Tensor) -> torch.Tensor:
        """The shift ``s`` applied to ``x``."""
        return x.detach().amin() if self.shift_mode == 'current' else self.shift.to(x.dtype)

    def _shifted(self, x, s):
        """``x' = max(x - s, 0) + ε`` (a new tensor)."""
        if x.requires_grad and torch.is_grad_enabled():
            return (x - s).clamp_min(0) + self.eps
        xs = torch.sub(x, s)
        if self.shift_mode != 'current':  # values below a constant shift would give log2 of a negative number
            xs.clamp_min_(0)
        return xs.add_(self.eps) if self.eps else xs

    def fake_quant(self, x):
        s = self.current_shift(x)
        back = s - self.eps if self.form == 'code' else s
        if not (x.requires_grad and torch.is_grad_enabled()):
            out = log_fake_quant_per_tensor(x, self.scale.to(x.dtype), self.bits, self.levels_per_octave,
                                            self.form == 'code', shift=s, eps=self.eps,
                                            clamp_below=self.shift_mode != 'current', offset=back)
            if out is not None:
                return out
        xs = self._shifted(x, s)
        return log_fake_quant(xs, self.scale.to(x.dtype), self.bits, self.levels_per_octave, self.form == 'code',
                              inplace=not xs.requires_grad, offset=back)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in ``[0, 2^b - 1]`` (code form: underflowed values, which dequantize to ``s - ε``, carry
        ``2^b - 1``)."""
        codes, _ = log_codes(self._shifted(x, self.current_shift(x)), self.scale.to(x.dtype), self.bits,
                             self.levels_per_octave, flush_underflow=self.form == 'code')
        return codes

    def extra_repr(self):
        return (f'{super().extra_repr()}, form={self.form}, shift={self.shift_mode}, range_method={self.range_method}')
