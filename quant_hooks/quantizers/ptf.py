"""FQ-ViT: Power-of-Two Factor quantizer for post-LayerNorm values and Log-Int-Softmax."""
from __future__ import annotations

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice
from .functional import MIN_SCALE, fake_quant_affine, log_dequant, log_round, quantize_affine
from .granularity import PerChannel, require_granularity
from .range_search import RangeSearch, error_sum, first_argmin
from .registry import build_quantizer, register_quantizer


@register_quantizer('ptf')
class PowerOfTwoFactorQuantizer(Quantizer):
    """Asymmetric uniform quantizer with one global Δ and a per-channel power-of-two factor.

    ``Δ = (max - min) / (2^b - 1)`` and ``z = clamp(round(-min / Δ), 0, 2^b - 1)`` from the global range (all
    channels), then per channel ``α_c ∈ {0, ..., max_factor}`` minimising the L2 error of the channel's
    calibration values, channel scale ``Δ_c = Δ · 2^(α_c - max_factor)``, all channels sharing ``z``:
    ``x̂ = (clamp(round(x / Δ_c) + z, 0, 2^b - 1) - z)·Δ_c``. Channels with a small range get a finer step while
    the integer arithmetic stays a shift.

    Paper vs code choices:
        * as in FQ-ViT's code, ties between factors go to the smallest α, the zero-point is computed with the
          largest scale (α = 3) and clamped to the code range, and the candidates are scored on all the
          calibration values (a second pass over them, once the global range is known).

    Args:
        bits: bit width in [2, 16].
        granularity: ``per_channel`` with the channel axis (default ``-1``: token layout ``[..., C]``; use
            ``dict(type='per_channel', axis=1)`` for ``NCHW``).
        max_factor: the largest α (FQ-ViT: 3).
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored
            (a strided sample).
    """

    def __init__(self, bits: int = 8, granularity='per_channel', max_factor: int = 3,
                 max_samples: int | None = None):
        super().__init__(bits, granularity)
        require_granularity(self.granularity, dict(per_channel=PerChannel), 'ptf', dynamic=False)
        if isinstance(max_factor, bool) or not isinstance(max_factor, int) or not 0 <= max_factor <= 8:
            raise QuantizerError(f'max_factor={max_factor!r} is invalid: allowed values are integers 0..8')
        self.max_factor = max_factor
        self.max_samples = max_samples
        self.register_buffer('scale', torch.empty(0))
        self.register_buffer('zero_point', torch.empty(0))
        self.register_buffer('alpha', torch.empty(0, dtype=torch.long))
        self._reset_observer()

    def _reset_observer(self):
        self._search = RangeSearch(self.granularity, (), 'after_stats', self.max_samples)
        self._base = self._zp = None

    @property
    def calibration_passes(self):
        return self._search.passes_planned

    def _observe(self, x):
        scored = self._search.observe(x, self.where)
        if scored is not None:
            xs, _ = scored
            qmax = self.qmax_unsigned
            self._search.accumulate(torch.stack([
                error_sum(xs, fake_quant_affine(xs, self._base * 2.0**(a - self.max_factor), self._zp, 0, qmax))
                for a in range(self.max_factor + 1)], dim=1))

    def _end_pass(self):
        more = self._search.end_pass(self.where)
        if self._base is None:  # the global range is known after the first pass
            s = self._search
            lo, hi = s.lo.min(), s.hi.max()
            self._base = ((hi - lo) / self.qmax_unsigned).clamp_min(MIN_SCALE)
            self._zp = torch.round(-lo / self._base).clamp(0, self.qmax_unsigned)
        return more

    def _compute_params(self):
        s = self._search
        alpha = first_argmin(s.scores)  # ties go to the smallest factor
        self.alpha = s.reshape(alpha)
        self.scale = s.reshape(self._base * torch.exp2(alpha.float() - self.max_factor))
        self.zero_point = self._zp.reshape(())

    def _search_info(self):
        counts = torch.bincount(self.alpha.flatten(), minlength=self.max_factor + 1)
        return dict(range_method='ptf', factor_counts=counts.tolist(), **self._search.info())

    def fake_quant(self, x):
        return fake_quant_affine(x, self.scale.to(x.dtype), self.zero_point.to(x.dtype), 0, self.qmax_unsigned)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in ``[0, 2^b - 1]``."""
        return quantize_affine(x, self.scale.to(x.dtype), self.zero_point.to(x.dtype), 0, self.qmax_unsigned)


# I-BERT's second-order approximation of exp on [-ln 2, 0]: exp(r) ~ a·(r + b)^2 + c, written as
# a·(r^2 + (b'/a)·r + c'/a) with the coefficients of the I-BERT code
_EXP_A = 0.35815147
_EXP_B = 0.96963238 / _EXP_A
_EXP_C = 1.0 / _EXP_A
_LN2 = -0.6931
_EXP_SHIFT = 30


def int_exp(x_int: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """I-BERT integer exponential of non-positive integers ``x_int`` (real value ``x_int · scale``).

    ``x = -z·ln2 + r`` with ``r ∈ (-ln2, 0]``; ``exp(r)`` by the integer polynomial ``(r + b_int)·r + c_int``,
    then a right shift by ``z`` (as ``· 2^(30 - z)``, floored). The result is proportional to
    ``exp(x_int · scale)`` (common factor ``a · scale² / 2^30``), which is all softmax needs.

    Args:
        x_int: integer-valued tensor, ``<= 0``.
        scale: the logits' quantization step (broadcasts against ``x_int``).

    Returns:
        integer-valued tensor ``>= 0``.
    """
    x0_int = torch.floor(_LN2 / scale)
    x_int = torch.maximum(x_int, _EXP_SHIFT * x0_int)
    z = torch.floor(x_int / x0_int)
    r = x_int - x0_int * z
    b_int = torch.floor(_EXP_B / scale)
    c_int = torch.floor(_EXP_C / scale**2)
    poly = (r + b_int) * r + c_int
    return torch.clamp(torch.floor(poly * torch.exp2(_EXP_SHIFT - z)), min=0)


@register_quantizer('log_int_softmax')
class LogIntSoftmax(Quantizer):
    """FQ-ViT's Log-Int-Softmax: a softmax computed with integer arithmetic whose output is log2-quantized.

    This quantizer takes the softmax *input* (the attention logits) and returns quantized probabilities
    ``x̂ = 2^(-q)``. The integer exp needs the logits as integers with a known step, so the logits are first
    fake-quantized by ``logit_quantizer`` (FQ-ViT: 8-bit uniform, calibrated here), then
    ``x_int = round(x̂_logit / Δ) - max``, ``e = int_exp(x_int)`` (I-BERT), and
    ``q = clamp(round(-log2(e / Σe)), 0, 2^b - 1)``. While observing, or with quantization disabled, it returns
    the float ``softmax(x)``, so it can replace a softmax in a model.

    Choice of site: the integer exp is the point of the method and it needs the logits, so the quantizer sits
    on the softmax input. Where an adapter only exposes the probabilities (a ``post_softmax`` site), use
    ``Log2Quantizer(range_method='fixed', scale=1.0, rounding='linear')``: it applies the same 4-bit log2
    output quantization to the float probabilities (the only difference is the exp approximation).

    Paper vs code choices:
        * ``rounding='log'`` (paper): ``q = round(-log2 p)``; ``rounding='linear'`` (FQ-ViT code):
          ``q = log_round(round(Σe / e))``, the nearest power of two of the integer reciprocal.
        * ``underflow='clamp'`` (the paper's clamp) keeps tiny probabilities at ``2^-(2^b - 1)``;
          ``underflow='zero'`` (FQ-ViT code) maps codes ``>= 2^b`` to 0.
        * intermediate integers are held in float32; they are exact while ``1/(a·Δ²) < 2^24`` (``Δ > 4e-4``).

    Args:
        bits: output bit width in [2, 16] (FQ-ViT: 4).
        dim: the softmax axis.
        logit_quantizer: config (or instance) of the static quantizer of the logits.
        rounding: ``log`` or ``linear``.
        underflow: ``clamp`` or ``zero``.
    """

    #: takes the softmax input and returns probabilities (a ``QuantSoftmax`` site calls it instead of its softmax)
    computes_softmax = True

    def __init__(self, bits: int = 4, dim: int = -1, logit_quantizer=None, rounding: str = 'log',
                 underflow: str = 'clamp'):
        super().__init__(bits, 'per_tensor')
        self.dim = int(dim)
        self.rounding = check_choice(rounding, 'rounding', ('log', 'linear'))
        self.underflow = check_choice(underflow, 'underflow', ('clamp', 'zero'))
        if logit_quantizer is None:
            logit_quantizer = dict(type='uniform', bits=8)
        self.logit_quantizer = build_quantizer(logit_quantizer)
        if not hasattr(self.logit_quantizer, 'params_for') or not self.logit_quantizer.requires_calibration:
            raise QuantizerError(f'logit_quantizer={logit_quantizer!r} is invalid: allowed values are static '
                                 'uniform quantizer configs (the integer exp needs a calibrated step)')

    def forward(self, x):
        if self.observing or not self.enabled:
            super().forward(x)  # records statistics while observing
            return torch.softmax(x, self.dim)
        return super().forward(x)

    def _observe(self, x):
        self.logit_quantizer.site = f'{self.site}:logits'
        self.logit_quantizer.observe(x)

    @property
    def calibration_passes(self):
        return self.logit_quantizer.calibration_passes

    def _end_pass(self):
        return self.logit_quantizer.end_pass()

    def _compute_params(self):
        self.logit_quantizer.freeze()

    def _search_info(self):
        return dict(logits=self.logit_quantizer.search_info)

    def reset(self):
        self.logit_quantizer.reset()
        super().reset()

    def _codes(self, x):
        """(codes before clamping, as float) of the probabilities."""
        scale = self.logit_quantizer.params_for(x)[0]
        x_int = torch.round(self.logit_quantizer.fake_quant(x) / scale)
        x_int = x_int - x_int.amax(dim=self.dim, keepdim=True)
        e = int_exp(x_int, scale)
        total = e.sum(dim=self.dim, keepdim=True)
        if self.rounding == 'log':
            return torch.round(-torch.log2(e / total))
        return log_round(torch.round(total / e))

    def fake_quant(self, x):
        raw = self._codes(x)
        qmax = self.qmax_unsigned
        mask = raw > qmax if self.underflow == 'zero' else None
        return log_dequant(raw.clamp(0, qmax), torch.ones((), dtype=x.dtype, device=x.device), 1, mask)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``q`` in ``[0, 2^b - 1]`` of the probabilities (``x̂ = 2^-q``)."""
        return self._codes(x).clamp(0, self.qmax_unsigned)

    def extra_repr(self):
        return f'{super().extra_repr()}, dim={self.dim}, rounding={self.rounding}, underflow={self.underflow}'
