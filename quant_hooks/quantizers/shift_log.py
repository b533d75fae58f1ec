"""ADFQ-ViT's Shift-Log2 quantizer for post-GELU activations (fc2 inputs)."""
from __future__ import annotations

import math

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice, check_max_samples, check_percentiles
from .functional import MIN_SCALE, group_quantiles, log_codes, log_fake_quant, lp_error, strided_columns
from .granularity import PerTensor, require_granularity
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
    one with the lowest L2 error of x̂' vs x') or ``'minmax'`` (Δ = max(x')).

    Args:
        bits: bit width in [2, 16].
        form: ``paper`` or ``code``.
        shift: ``current``, ``calibrated`` or a float.
        eps: ε added after the shift (authors' code: 1e-6).
        range_method: ``percentile`` or ``minmax``.
        percentiles: candidates for ``percentile``.
        max_samples: bound on the values kept to score the candidates.
    """

    def __init__(self, bits: int = 4, form: str = 'paper', shift='calibrated', eps: float = 1e-6,
                 range_method: str = 'percentile', percentiles=(0.999, 0.9999, 0.99999), max_samples: int = 1 << 18):
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
        self.max_samples = check_max_samples(max_samples)
        self.register_buffer('scale', torch.empty(0))
        self.register_buffer('shift', torch.tensor(const))
        self._reset_observer()

    # -- calibration ----------------------------------------------------------------------------------------
    def _reset_observer(self):
        self._min = math.inf
        self._vmax = -math.inf
        self._qsum = None
        self._batches = 0
        self._pool: list[torch.Tensor] = []

    def _observe(self, x):
        v = x.reshape(1, -1).float()
        batch_min = float(v.min())
        self._min = min(self._min, batch_min)
        if self.shift_mode == 'current':
            v = v - batch_min  # the quantizer sees x - min(x) of each tensor
        self._vmax = max(self._vmax, float(v.max()))
        self._batches += 1
        if self.range_method == 'percentile':
            q = group_quantiles(v, self.percentiles)[0]
            self._qsum = q if self._qsum is None else self._qsum + q
            self._pool.append(strided_columns(v, max(16, self.max_samples // 8)).clone())
            if sum(s.shape[1] for s in self._pool) > self.max_samples:
                self._pool = [strided_columns(torch.cat(self._pool, dim=1), self.max_samples).clone()]

    def _compute_params(self):
        if self.shift_mode == 'calibrated':
            self.shift = torch.tensor(self._min)
        # observed values v are x (constant shifts) or x - min(x) (current shift); x' = v - s + eps
        s = 0.0 if self.shift_mode == 'current' else float(self.shift)
        if self.range_method == 'minmax':
            delta = torch.tensor(max(self._vmax - s, 0.0) + self.eps)
        else:
            cands = (self._qsum / self._batches - s).clamp_min(0) + self.eps
            sample = (torch.cat(self._pool, dim=1)[0] - s).clamp_min(0) + self.eps
            errs = torch.stack([lp_error(sample[None], self._fq_shifted(sample[None], c.clamp_min(MIN_SCALE)))[0]
                                for c in cands])
            delta = cands[errs.argmin()]
        self.scale = delta.clamp_min(MIN_SCALE).reshape(())

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
        xs = self._shifted(x, s)
        out = self._fq_shifted(xs, self.scale.to(x.dtype), inplace=not xs.requires_grad)
        back = s - self.eps if self.form == 'code' else s
        return out + back if out.requires_grad else out.add_(back)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in ``[0, 2^b - 1]`` (code form: underflowed values, which dequantize to ``s - ε``, carry
        ``2^b - 1``)."""
        codes, _ = log_codes(self._shifted(x, self.current_shift(x)), self.scale.to(x.dtype), self.bits,
                             self.levels_per_octave, flush_underflow=self.form == 'code')
        return codes

    def extra_repr(self):
        return (f'{super().extra_repr()}, form={self.form}, shift={self.shift_mode}, range_method={self.range_method}')
