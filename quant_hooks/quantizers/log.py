"""Logarithmic quantizers for post-softmax values: log2 and log√2 (RepQ-ViT)."""
from __future__ import annotations

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice, check_percentiles
from .functional import MIN_SCALE, log_codes, log_dequant, log_fake_quant, log_round
from .granularity import PerChannel, PerHead, PerTensor, require_granularity
from .range_search import RangeSearch, error_sum, first_argmin
from .registry import register_quantizer

LOG_RANGE_METHODS = ('minmax', 'percentile', 'fixed')


class LogQuantizer(Quantizer):
    """Log quantizer ``q = clamp(round(-k·log2(x / Δ)), 0, 2^b - 1)``, ``x̂ = Δ · 2^(-q / k)``.

    ``k = 1`` is base 2, ``k = 2`` base √2 (two levels per octave). Values at or below 0 (a log quantizer has
    no sign) and values whose unclamped code is ``>= 2^b`` (too small for the code range) dequantize to 0 with
    ``underflow='zero'`` (RepQ-ViT and FQ-ViT code) or to the smallest level with ``underflow='clamp'``
    (the plain formula ``clamp(...)``). Values above Δ take code 0 (x̂ = Δ).

    Paper vs code choices:
        * RepQ-ViT's log√2 code computes ``2^(-ceil(q/2)) · (1 + (√2 - 1)·(q mod 2)) · Δ``; this is the same
          value as ``Δ · 2^(-q/2)``, computed here with one ``exp2`` (equal to within float rounding).
        * RepQ-ViT's code picks Δ among ``quantile(x, p)``, p in {0.999, 0.9999, 0.99999}, by the L2 error
          (``range_method='percentile'``, the default; quantiles and errors over all calibration values, the
          errors in a second pass); ``minmax`` uses Δ = max(x); ``fixed`` uses a given Δ
          (1.0 for probabilities, as FQ-ViT does) and needs no calibration.
        * ``rounding='linear'`` (base 2 only) rounds the ratio ``Δ / x`` to the nearest power of two in the
          linear domain (round up when ``Δ/x - 2^f >= 2^(f-1)``, ``f = floor(log2(Δ/x))``), as FQ-ViT's
          ``log_round`` does; ``'log'`` rounds ``log2`` (the papers' formula).

    Args:
        bits: bit width in [2, 16].
        granularity: ``per_tensor``, ``per_head`` or ``per_channel`` (static).
        range_method: ``percentile``, ``minmax`` or ``fixed``.
        percentiles: candidates for ``percentile``.
        scale: Δ for ``range_method='fixed'``.
        rounding: ``log`` or ``linear`` (see above).
        underflow: ``zero`` or ``clamp`` (see above).
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored.
        quantile_mode: ``all`` (quantiles of all calibration values) or ``per_batch_mean``.
    """

    levels_per_octave = 1

    def __init__(self, bits: int = 4, granularity='per_tensor', range_method: str = 'percentile',
                 percentiles=(0.999, 0.9999, 0.99999), scale: float | None = None, rounding: str = 'log',
                 underflow: str = 'zero', max_samples: int | None = None, quantile_mode: str = 'all'):
        super().__init__(bits, granularity)
        require_granularity(self.granularity, dict(per_tensor=PerTensor, per_head=PerHead, per_channel=PerChannel),
                            type(self).__name__, dynamic=False)
        self.range_method = check_choice(range_method, 'range_method', LOG_RANGE_METHODS)
        self.rounding = check_choice(rounding, 'rounding', ('log', 'linear'))
        if self.rounding == 'linear' and self.levels_per_octave != 1:
            raise QuantizerError(f"rounding='linear' is invalid for {type(self).__name__}: allowed values are "
                                 "['log'] (linear-domain rounding is defined for base 2 only)")
        self.underflow = check_choice(underflow, 'underflow', ('zero', 'clamp'))
        self.percentiles = check_percentiles(percentiles)
        self.max_samples = max_samples
        self.quantile_mode = quantile_mode
        self.register_buffer('scale', torch.empty(0))
        if self.range_method == 'fixed':
            if scale is None or not float(scale) > 0:
                raise QuantizerError(f"scale={scale!r} is invalid with range_method='fixed': allowed values are "
                                     'floats > 0')
            if not isinstance(self.granularity, PerTensor):
                raise QuantizerError("range_method='fixed' needs granularity='per_tensor'")
            self.scale = torch.tensor(float(scale))
            self.requires_calibration = False
        elif scale is not None:
            raise QuantizerError(f"scale={scale!r} is only valid with range_method='fixed'")
        self._reset_observer()

    # -- calibration ----------------------------------------------------------------------------------------
    def _reset_observer(self):
        pct = self.range_method == 'percentile'
        scored = pct and len(self.percentiles) > 1
        self._search = RangeSearch(self.granularity, self.percentiles if pct else (),
                                   'after_stats' if scored else 'none', self.max_samples, self.quantile_mode)
        self._cands = None

    @property
    def calibration_passes(self):
        return self._search.passes_planned if self.requires_calibration else 1

    def _observe(self, x):
        if not self.requires_calibration:
            return
        scored = self._search.observe(x, self.where)
        if scored is not None:
            xs, _ = scored
            self._search.accumulate(torch.stack([error_sum(xs, self._fq(xs, self._cands[:, i:i + 1]))
                                                 for i in range(self._cands.shape[1])], dim=1))

    def _end_pass(self):
        if not self.requires_calibration:
            return False
        more = self._search.end_pass(self.where)
        if self._cands is None and self._search.ready:
            s = self._search
            self._cands = (s.hi[:, None] if self.range_method == 'minmax' else s.quantiles()).clamp_min(MIN_SCALE)
        return more

    def _compute_params(self):
        if not self.requires_calibration:
            return
        s = self._search
        if s.scores is None:
            self._best = torch.zeros(self._cands.shape[0], dtype=torch.long, device=self._cands.device)
        else:
            self._best = first_argmin(s.scores)
        self.scale = s.reshape(self._cands.gather(1, self._best[:, None])[:, 0])

    def _search_info(self):
        if not self.requires_calibration:
            return dict(range_method='fixed')
        info = dict(range_method=self.range_method, **self._search.info())
        if self.range_method == 'percentile':
            picked = torch.tensor(self.percentiles)[self._best.cpu()]
            info['percentile'] = float(picked) if picked.numel() == 1 else picked.tolist()
        return info

    # -- quantization ---------------------------------------------------------------------------------------
    def _codes(self, x, scale):
        flush = self.underflow == 'zero'
        if self.rounding == 'log':
            return log_codes(x, scale, self.bits, self.levels_per_octave, flush)
        qmax = 2**self.bits - 1
        raw = log_round(scale / x.clamp_min(0))  # Δ / x is inf where x <= 0
        mask = raw > qmax if flush else None
        return raw.clamp(0, qmax), mask

    def _fq(self, x, scale):
        if self.rounding == 'log':
            return log_fake_quant(x, scale, self.bits, self.levels_per_octave, self.underflow == 'zero')
        codes, mask = self._codes(x, scale)
        return log_dequant(codes, scale, self.levels_per_octave, mask)

    def fake_quant(self, x):
        return self._fq(x, self.scale.to(x.dtype))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in ``[0, 2^b - 1]`` (underflowed values, which dequantize to 0, carry ``2^b - 1``)."""
        return self._codes(x, self.scale.to(x.dtype))[0]

    def extra_repr(self):
        return (f'{super().extra_repr()}, base={"2" if self.levels_per_octave == 1 else "sqrt2"}, '
                f'range_method={self.range_method}, rounding={self.rounding}, underflow={self.underflow}')


@register_quantizer('log2')
class Log2Quantizer(LogQuantizer):
    """Base-2 log quantizer (see :class:`LogQuantizer`)."""

    levels_per_octave = 1


@register_quantizer('log_sqrt2')
class LogSqrt2Quantizer(LogQuantizer):
    """Base-√2 log quantizer of RepQ-ViT for post-softmax values (see :class:`LogQuantizer`)."""

    levels_per_octave = 2
