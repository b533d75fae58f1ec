"""AdaRound: learnable rounding of weights, ready for block / module reconstruction."""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import QuantizerError, check_choice
from .functional import floor_ste
from .registry import register_quantizer
from .uniform import UniformQuantizer

ROUND_MODES = ('nearest', 'soft', 'hard')


@register_quantizer('adaround')
class AdaRoundQuantizer(UniformQuantizer):
    """Uniform weight quantizer whose rounding direction is learned (Nagel et al., 2020).

    Scale and zero-point come from the uniform range estimators (default: per output channel, min/max). The
    rounding of each weight is ``floor(W/Δ) + h(V)`` with the rectified sigmoid
    ``h(V) = clamp(σ(V)·(ζ - γ) + γ, 0, 1)`` (``ζ = 1.1``, ``γ = -0.1``), ``V`` a learnable tensor of the
    weight's shape (``alpha``), initialised so that ``h(V) = W/Δ - floor(W/Δ)`` (the soft rounding starts at
    the float weight). Modes (``set_mode``):

    * ``nearest``: plain rounding, as :class:`UniformQuantizer` (the state after ``freeze``);
    * ``soft``: ``x̂ = (clamp(floor(W/Δ) + h(V) + z, qmin, qmax) - z)·Δ``, differentiable in ``V`` (and in
      ``W`` and Δ through a straight-through floor): what reconstruction optimises;
    * ``hard``: ``h(V)`` replaced by ``1[h(V) >= 0.5]`` (computed as ``V >= logit((1/2 - γ)/(ζ - γ))``, i.e.
      ``V >= 0`` for the default ζ, γ, as the BRECQ code does): the deployed rounding after reconstruction.

    :meth:`regularization` is AdaRound's ``Σ 1 - |2h(V) - 1|^β`` and :func:`beta_schedule` its annealing of β.
    The mode is stored in the ``mode_`` buffer and ``alpha`` is a parameter, so ``state_dict`` round-trips
    a learned rounding.

    Args:
        bits: bit width in [2, 16].
        granularity: static granularity of Δ (default per output channel, axis 0).
        symmetric, range_method, and the other arguments: see :class:`UniformQuantizer`.
        zeta, gamma: stretch of the rectified sigmoid.
    """

    def __init__(self, bits: int = 4, granularity=None, symmetric: bool = False, range_method: str = 'minmax',
                 zeta: float = 1.1, gamma: float = -0.1, **kwargs):
        granularity = dict(type='per_channel', axis=0) if granularity is None else granularity
        super().__init__(bits, granularity, symmetric, range_method, **kwargs)
        if not self.requires_calibration:
            raise QuantizerError("adaround: granularity='per_token' (dynamic) is invalid: allowed values are static "
                                 'granularities (a weight quantizer is calibrated once)')
        if not (zeta > 1.0 and gamma < 0.0):
            raise QuantizerError(f'zeta={zeta}, gamma={gamma} are invalid: need zeta > 1 and gamma < 0')
        self.zeta, self.gamma = float(zeta), float(gamma)
        self.alpha = nn.Parameter(torch.empty(0))
        self.register_buffer('mode_', torch.tensor(0))
        self._weight = None
        self._floor_key = self._floor_value = None

    # -- calibration ----------------------------------------------------------------------------------------
    def _observe(self, x):
        super()._observe(x)
        self._weight = x.detach()

    def _compute_params(self):
        super()._compute_params()
        self.init_alpha(self._weight)
        self.mode_.fill_(0)

    def _reset_observer(self):
        super()._reset_observer()
        self._weight = None

    def init_alpha(self, weight: torch.Tensor) -> None:
        """``V`` such that ``h(V)`` equals the fractional part of ``W/Δ`` (the soft rounding reproduces W)."""
        with torch.no_grad():
            w = weight.detach().float()
            rest = w / self.scale - torch.floor(w / self.scale)
            rest = rest.clamp(1e-6, 1 - 1e-6)  # keep the logit finite
            v = -torch.log((self.zeta - self.gamma) / (rest - self.gamma) - 1)
        self.alpha = nn.Parameter(v.to(weight.device), requires_grad=self.alpha.requires_grad)
        self.version += 1

    # -- modes ----------------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return ROUND_MODES[int(self.mode_)]

    def set_mode(self, mode: str) -> None:
        """``nearest``, ``soft`` or ``hard`` (see the class docstring)."""
        self.mode_.fill_(ROUND_MODES.index(check_choice(mode, 'mode', ROUND_MODES)))
        self.version += 1
        self._floor_key = self._floor_value = None

    def rectified_sigmoid(self) -> torch.Tensor:
        """``h(V) = clamp(σ(V)·(ζ - γ) + γ, 0, 1)``."""
        return torch.clamp(torch.sigmoid(self.alpha) * (self.zeta - self.gamma) + self.gamma, 0, 1)

    def regularization(self, beta: float) -> torch.Tensor:
        """AdaRound's rounding regulariser ``Σ 1 - |2h(V) - 1|^β`` (pushes ``h`` to 0 or 1 as β falls)."""
        return (1 - (2 * self.rectified_sigmoid() - 1).abs().pow(beta)).sum()

    # -- quantization ---------------------------------------------------------------------------------------
    def fake_quant(self, x):
        mode = self.mode
        if mode == 'nearest':
            return super().fake_quant(x)
        if self.alpha.shape != x.shape:
            raise QuantizerError(f'{self.where}: the rounding variables have shape {tuple(self.alpha.shape)} but the '
                                 f'weight has shape {tuple(x.shape)}; calibrate on this weight (or init_alpha)')
        scale, zp = self.params_for(x)
        if mode == 'hard':  # h(V) >= 1/2  <=>  σ(V) >= (1/2 - γ)/(ζ - γ)  <=>  V >= logit((1/2 - γ)/(ζ - γ))
            p = (0.5 - self.gamma) / (self.zeta - self.gamma)
            h = (self.alpha >= math.log(p / (1 - p))).to(x.dtype)
        else:
            h = self.rectified_sigmoid().to(x.dtype)
        x_int = self._floor(x, scale) + h
        return (torch.clamp(x_int + zp, self.qmin, self.qmax) - zp) * scale

    def _floor(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``floor(W/Δ)`` (straight-through); while neither needs a gradient it is kept between calls, since
        reconstruction steps change only the rounding variables."""
        if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
            return floor_ste(x / scale)
        key = (x.data_ptr(), x._version, x.shape, x.dtype, scale.data_ptr(), scale._version, self.version)
        if self._floor_key != key:
            self._floor_value = torch.floor(x / scale)
            self._floor_key = key
        return self._floor_value

    def extra_repr(self):
        return f'{super().extra_repr()}, mode={self.mode}'


def beta_schedule(step: int, total_steps: int, start: float = 20.0, end: float = 2.0, warmup: float = 0.2) -> float:
    """AdaRound's annealing of β: ``start`` during the first ``warmup`` fraction of the steps, then linear to ``end``.

    Args:
        step: current step (0-based).
        total_steps: number of steps.
        start, end: β at the start and the end.
        warmup: fraction of the steps before the decay starts (ADFQ-ViT / BRECQ: 0.2).

    Returns:
        β for this step.
    """
    if total_steps < 1 or not 0.0 <= warmup < 1.0:
        raise QuantizerError(f'total_steps={total_steps}, warmup={warmup} are invalid: need total_steps >= 1 and '
                             '0 <= warmup < 1')
    begin = warmup * total_steps
    if step < begin:
        return float(start)
    rel = (step - begin) / max(total_steps - begin, 1e-12)
    return float(end + (start - end) * max(0.0, 1.0 - rel))
