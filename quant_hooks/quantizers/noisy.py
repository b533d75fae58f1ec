"""NoisyQuant: a fixed noisy bias added before any activation quantizer and removed after it."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from .base import Quantizer
from .errors import QuantizerError
from .granularity import PerChannel
from .layer_error import LayerFnError, OutputError
from .registry import build_quantizer, register_quantizer


def _finite_float(value, field: str, minimum: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = f' >= {minimum}' if minimum is not None else ''
        raise QuantizerError(f'{field}={value!r} is invalid: allowed values are finite floats{bound}')
    return v


@register_quantizer('noisy')
class NoisyQuantizer(Quantizer):
    """``Q(x + N) - N`` with a fixed noise ``N`` per input channel, around any activation quantizer.

    ``N_c = Δ_c · (mean + range · u_c)``, ``u_c ~ U(-1/2, 1/2)`` drawn once from ``seed`` when the quantizer is
    calibrated and stored as a buffer (so a saved state reproduces it); ``Δ_c`` is the wrapped quantizer's step
    (see ``step``). With the defaults (range 1, mean 0), ``N ~ U(-Δ/2, Δ/2)`` as in the paper.

    Removing the noise: in front of a linear layer, ``W·(Q(x+N) - N) + b = W·Q(x+N) + (b - W·N)``, so the
    subtraction folds into the bias at no run-time cost. A ``QuantLinear`` / ``QuantConv2d`` that owns this
    quantizer calls :meth:`bind_layer` when it is installed; when the layer can fold (a linear layer with the
    channel axis last, or a convolution with the channel axis 1 and no zero padding, since zero-padded border
    pixels carry no noise) the quantizer returns ``Q(x + N)`` and the layer adds :meth:`fold_bias` to its
    bias. Anywhere else (standalone, a matmul operand, a zero-padded conv) it returns ``Q(x + N) - N``.

    The wrapped quantizer is calibrated on the clean ``x``; the noise is drawn from its step afterwards.

    Paper vs code choices:
        * the authors' simple implementation draws unseeded Gaussian noise; this is the paper's uniform noise,
          seeded and fixed. :func:`search_noise` is the paper's per-layer search of the noise range and mean
          (authors' code: mean ``Δ·i/200``, ``i ∈ [-200, 200)``, range over 2000 steps; here a coarser,
          configurable grid with a coordinate search by default).

    Args:
        quantizer: config (or instance) of the wrapped activation quantizer.
        noise_range: width of the noise in units of Δ (>= 0).
        noise_mean: centre of the noise in units of Δ.
        seed: seed of the noise draw.
        channel_axis: the input-channel axis of the activations (``-1`` for tokens, ``1`` for ``NCHW``).
        step: ``'auto'``: the wrapped quantizer's ``scale`` (per channel when it is per-channel along
            ``channel_axis``, else its mean), or ``(max - min) / (2^b - 1)`` of the observed values when it has no
            static ``scale``; or a float, used as Δ for all channels.
    """

    def __init__(self, quantizer=None, noise_range: float = 1.0, noise_mean: float = 0.0, seed: int = 0,
                 channel_axis: int = -1, step='auto'):
        inner = build_quantizer(dict(type='uniform', bits=8) if quantizer is None else quantizer)
        if not isinstance(inner, Quantizer):
            raise QuantizerError(f'quantizer={quantizer!r} is invalid: allowed values are quantizer configs')
        super().__init__(inner.bits, inner.granularity)
        self.quantizer = inner
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise QuantizerError(f'seed={seed!r} is invalid: allowed values are integers')
        self.seed = seed
        self.channel_axis = int(channel_axis)
        if step != 'auto':
            step = _finite_float(step, 'step', 0.0)
            if step <= 0:
                raise QuantizerError(f"step={step!r} is invalid: allowed values are 'auto' or floats > 0")
        self.step_mode = step
        self.register_buffer('noise_range', torch.tensor(_finite_float(noise_range, 'noise_range', 0.0)))
        self.register_buffer('noise_mean', torch.tensor(_finite_float(noise_mean, 'noise_mean')))
        self.register_buffer('noise_unit', torch.empty(0))
        self.register_buffer('step', torch.empty(0))
        self.register_buffer('noise', torch.empty(0))
        #: set by bind_layer: the owning layer folds -W·N into its bias, so forward returns Q(x + N)
        self.bias_folded = False
        self._reset_observer()

    # -- calibration ----------------------------------------------------------------------------------------
    def _reset_observer(self):
        self._channels = None
        self._noise_shape = None
        self._lo, self._hi = math.inf, -math.inf

    @property
    def calibration_passes(self):
        return self.quantizer.calibration_passes

    def _observe(self, x):
        self.quantizer.site = f'{self.site}:inner'
        if self.passes_done:  # later passes only feed the wrapped quantizer's search
            self.quantizer.observe(x)
            return
        ch = PerChannel(self.channel_axis)
        c = ch.num_groups(x)
        if self._channels is not None and c != self._channels:
            raise QuantizerError(f'{self.where}: observed {c} channels along axis {self.channel_axis}, earlier '
                                 f'batches had {self._channels}')
        self._channels = c
        self._noise_shape = tuple(ch.param_shape(x))
        self._lo = min(self._lo, float(x.min()))
        self._hi = max(self._hi, float(x.max()))
        self.quantizer.observe(x)

    def _end_pass(self):
        return self.quantizer.end_pass()

    def _compute_params(self):
        self.quantizer.freeze()
        c = self._channels
        self.step = self._reference_step(c)
        gen = torch.Generator().manual_seed(self.seed)
        self.noise_unit = (torch.rand(c, generator=gen, dtype=torch.float64) - 0.5).float().to(self.step.device)
        self._update_noise()

    def _search_info(self):
        return dict(inner=self.quantizer.describe())

    def _reference_step(self, c: int) -> torch.Tensor:
        if self.step_mode != 'auto':
            return torch.full((c, ), self.step_mode)
        scale = getattr(self.quantizer, 'scale', None)
        static = self.quantizer.requires_calibration
        if static and isinstance(scale, torch.Tensor) and scale.numel() > 0:
            scale = scale.detach().float()
            if tuple(scale.shape) == self._noise_shape:  # per channel along the same axis
                return scale.reshape(c).clone()
            return scale.mean().expand(c).clone()
        span = max(self._hi - self._lo, 0.0)
        return torch.full((c, ), max(span / self.qmax_unsigned, 1e-8))

    def _update_noise(self):
        self.noise = self.step * (self.noise_mean + self.noise_range * self.noise_unit)
        self.version += 1

    def set_noise(self, noise_range: float, noise_mean: float) -> None:
        """Set the noise range and mean (units of Δ) of a calibrated quantizer."""
        if self.noise_unit.numel() == 0:
            raise QuantizerError(f'{self.where}: set_noise needs a calibrated quantizer (observe data and freeze)')
        self.noise_range.fill_(_finite_float(noise_range, 'noise_range', 0.0))
        self.noise_mean.fill_(_finite_float(noise_mean, 'noise_mean'))
        self._update_noise()

    def reset(self):
        self.quantizer.reset()
        super().reset()

    # -- folding --------------------------------------------------------------------------------------------
    def bind_layer(self, layer) -> None:
        """Called by the layer that owns this quantizer as its input quantizer: fold the noise removal into the
        layer's bias when that is exact."""
        self.bias_folded = _can_fold(layer, self.channel_axis)

    def fold_bias(self, weight: torch.Tensor, bias: torch.Tensor | None, layer) -> torch.Tensor | None:
        """``b - W·N`` when the noise removal is folded into ``layer``, else ``bias`` unchanged.

        Args:
            weight: the (quantized) weight the layer uses.
            bias: the layer's bias or None.
            layer: the owning ``QuantLinear`` / ``QuantConv2d``.
        """
        if not self.bias_folded:
            return bias
        wn = weight_times_noise(weight, self.noise.to(weight.dtype), getattr(layer, 'groups', 1))
        return -wn if bias is None else bias - wn

    # -- quantization ---------------------------------------------------------------------------------------
    def _noise_for(self, x):
        shape = PerChannel(self.channel_axis).param_shape(x)
        if shape[0] != self.noise.numel():
            raise QuantizerError(f'{self.where}: input has {shape[0]} channels along axis {self.channel_axis} but '
                                 f'the noise was drawn for {self.noise.numel()}')
        return self.noise.to(x.dtype).reshape(shape)

    def fake_quant_unfolded(self, x: torch.Tensor) -> torch.Tensor:
        """``Q(x + N) - N`` whatever the owner (used by :func:`search_noise`)."""
        n = self._noise_for(x)
        return self.quantizer(x + n) - n

    def input_error_unfolded(self, x: torch.Tensor) -> torch.Tensor:
        """``Q(x + N) - N - x``, the error :meth:`fake_quant_unfolded` adds to ``x``: the quantization error of
        ``y = x + N`` (two passes fewer than forming ``Q(x + N) - N`` and subtracting ``x``)."""
        y = x + self._noise_for(x)
        out = self.quantizer(y)
        return out - y if out is y else out.sub_(y)

    def fake_quant(self, x):
        n = self._noise_for(x)
        out = self.quantizer(x + n)
        if self.bias_folded:
            return out
        return out - n if out.requires_grad or out is x else out.sub_(n)

    def extra_repr(self):
        return (f'bits={self.bits}, seed={self.seed}, channel_axis={self.channel_axis}, '
                f'noise_range={float(self.noise_range):g}, noise_mean={float(self.noise_mean):g}, '
                f'bias_folded={self.bias_folded}')


def _can_fold(layer, channel_axis: int) -> bool:
    weight = getattr(layer, 'weight', None)
    if weight is None:
        return False
    if weight.dim() == 2:  # linear: input [..., C]
        return channel_axis == -1
    if weight.dim() == 4:  # conv2d: input [N, C, H, W]
        no_zero_pad = getattr(layer, 'padding_mode', 'zeros') != 'zeros' or \
            not any(getattr(layer, '_reversed_padding_repeated_twice', [1]))
        return channel_axis in (1, -3) and no_zero_pad
    return False


def weight_times_noise(weight: torch.Tensor, noise: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``W·N``: the layer output caused by a constant input ``N`` per input channel (linear or conv, any groups).

    Args:
        weight: ``[out, in]`` (linear) or ``[out, in / groups, kh, kw]`` (conv).
        noise: ``[in]``.
        groups: convolution groups.

    Returns:
        ``[out]``.
    """
    if weight.dim() == 2:
        return weight @ noise
    out, in_g = weight.shape[:2]
    w = weight.sum(dim=tuple(range(2, weight.dim()))).reshape(groups, out // groups, in_g)
    return torch.einsum('goi,gi->go', w, noise.reshape(groups, in_g)).reshape(out)


@torch.no_grad()
def search_noise(quantizer: NoisyQuantizer, inputs: torch.Tensor | Iterable[torch.Tensor] | None,
                 layer_fn: Callable[[torch.Tensor], torch.Tensor] | OutputError,
                 targets: Iterable[torch.Tensor] | None = None, ranges=None, means=None,
                 mode: str = 'coordinate') -> dict:
    """Choose the noise range and mean of a calibrated :class:`NoisyQuantizer` that minimise the layer-output MSE.

    The output for a candidate is ``layer_fn(Q(x + N) - N)`` (what the layer computes with the bias folded);
    it is compared with ``targets`` (default: ``layer_fn(x)``, the output for the clean input). The candidate
    grid includes range 0 / mean 0 (the plain quantizer), so the result is never worse than it on these inputs.

    Args:
        quantizer: a calibrated noisy quantizer; its noise is set to the best candidate.
        inputs: calibration inputs of the layer (one tensor or several); ``None`` with an :class:`OutputError`.
        layer_fn: the layer as a function of its input (e.g. ``lambda x: F.linear(x, w_q, b)``), or an
            :class:`~quant_hooks.quantizers.layer_error.OutputError` that holds the inputs and scores the
            output error itself (:class:`LinearOutputError` for linear layers).
        targets: reference outputs, one per input (with a function).
        ranges: candidate ranges (units of Δ); default ``0, 0.125, ..., 2``.
        means: candidate means (units of Δ); default ``-1, -0.875, ..., 1``.
        mode: ``coordinate`` (ranges at mean 0, then means at the best range) or ``grid`` (all pairs).

    Returns:
        dict with ``noise_range``, ``noise_mean``, ``mse`` (best), ``plain_mse`` (no noise) and ``evaluated``.
    """
    if mode not in ('coordinate', 'grid'):
        raise QuantizerError(f"mode={mode!r} is invalid: allowed values are ['coordinate', 'grid']")
    if isinstance(layer_fn, OutputError):
        error = layer_fn
    else:
        error = LayerFnError([inputs] if isinstance(inputs, torch.Tensor) else list(inputs or []), layer_fn, targets)
    if not error.inputs:
        raise QuantizerError('search_noise needs at least one calibration input')
    ranges = [float(r) for r in (torch.linspace(0, 2, 17) if ranges is None else ranges)]
    means = [float(m) for m in (torch.linspace(-1, 1, 17) if means is None else means)]
    cache: dict[tuple[float, float], float] = {}

    def mse(r: float, m: float) -> float:
        key = (r, m)
        if key not in cache:
            quantizer.set_noise(r, m)
            cache[key] = error.of_input_error(quantizer.input_error_unfolded)
        return cache[key]

    plain = mse(0.0, 0.0)
    best = (plain, 0.0, 0.0)
    if mode == 'grid':
        pairs = [(r, m) for r in ranges for m in means]
    else:
        pairs = [(r, 0.0) for r in ranges]
    for r, m in pairs:
        e = mse(r, m)
        if e < best[0]:
            best = (e, r, m)
    if mode == 'coordinate':
        r_best = best[1]
        for m in means:
            e = mse(r_best, m)
            if e < best[0]:
                best = (e, r_best, m)
    quantizer.set_noise(best[1], best[2])
    return dict(noise_range=best[1], noise_mean=best[2], mse=best[0], plain_mse=plain, evaluated=len(cache))
