"""Q-HyViT helpers: scheme and granularity chosen by calibration loss, and zero-point overflow handling."""
from __future__ import annotations

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice
from .functional import MIN_SCALE, affine_params, fake_quant_affine, quantize_affine
from .granularity import PerChannel, PerTensor
from .observer import GroupObserver
from .registry import register_quantizer

OVERFLOW_POLICIES = ('clamp_range', 'symmetric', 'none')
SCHEMES = ('asymmetric', 'symmetric')
GRANULARITIES = ('per_tensor', 'per_channel')
LOSSES = ('mse', 'cosine')


def zero_point_overflow(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Where the asymmetric zero-point ``z = round(-lo / Δ)`` falls outside the code range ``[0, 2^b - 1]``.

    That happens for ranges that do not contain 0 (all-positive ``lo > Δ/2`` gives ``z < 0``, all-negative gives
    ``z > 2^b - 1``): a ``uint`` zero-point cannot store it.
    """
    scale, zp = affine_params(lo, hi, bits, symmetric=False)
    return (zp < 0) | (zp > 2**bits - 1)


def resolve_zero_point_overflow(lo: torch.Tensor, hi: torch.Tensor, bits: int, policy: str = 'clamp_range'):
    """Asymmetric parameters per group, with overflowing zero-points handled by ``policy``.

    Args:
        lo, hi: ranges, any (matching) shape.
        bits: bit width.
        policy: ``clamp_range``: widen the range of overflowing groups to include 0 (``z`` is then 0 or
            ``2^b - 1``); ``symmetric``: quantize those groups symmetrically (``z = 0``, signed codes);
            ``none``: keep the overflowing ``z`` (fake quantization is still correct, but ``z`` does not fit
            the integer format).

    Returns:
        (scale, zero_point, qmin, qmax, overflow mask), all shaped like ``lo``.
    """
    check_choice(policy, 'overflow', OVERFLOW_POLICIES)
    over = zero_point_overflow(lo, hi, bits)
    qmax_u = float(2**bits - 1)
    qmin = torch.zeros_like(lo)
    qmax = torch.full_like(lo, qmax_u)
    if policy == 'clamp_range':
        lo = torch.where(over, lo.clamp_max(0), lo)
        hi = torch.where(over, hi.clamp_min(0), hi)
        scale, zp = affine_params(lo, hi, bits, symmetric=False)
    elif policy == 'symmetric':
        scale_a, zp_a = affine_params(lo, hi, bits, symmetric=False)
        scale_s, zp_s = affine_params(lo, hi, bits, symmetric=True)
        scale, zp = torch.where(over, scale_s, scale_a), torch.where(over, zp_s, zp_a)
        qmin = torch.where(over, torch.full_like(lo, -2.0**(bits - 1)), qmin)
        qmax = torch.where(over, torch.full_like(lo, 2.0**(bits - 1) - 1), qmax)
    else:
        scale, zp = affine_params(lo, hi, bits, symmetric=False)
    return scale, zp, qmin, qmax, over


def _params(lo, hi, bits, symmetric, overflow):
    if symmetric:
        scale, zp = affine_params(lo, hi, bits, symmetric=True)
        return (scale, zp, torch.full_like(lo, -2.0**(bits - 1)), torch.full_like(lo, 2.0**(bits - 1) - 1),
                torch.zeros_like(lo, dtype=torch.bool))
    return resolve_zero_point_overflow(lo, hi, bits, overflow)


def _loss(sample: torch.Tensor, xq: torch.Tensor, loss: str) -> torch.Tensor:
    """Scalar calibration loss over a ``[C, S]`` sample."""
    if loss == 'mse':
        return (xq - sample).square().mean()
    return 1.0 - torch.nn.functional.cosine_similarity(xq.reshape(1, -1), sample.reshape(1, -1), eps=1e-12)[0]


def evaluate_candidates(lo_c: torch.Tensor, hi_c: torch.Tensor, sample: torch.Tensor, bits: int,
                        schemes=SCHEMES, granularities=GRANULARITIES, overflow: str = 'clamp_range',
                        loss: str = 'mse', alphas=(1.0, )) -> list[dict]:
    """Calibration loss of every (granularity, scheme) candidate.

    Args:
        lo_c, hi_c: per-channel observed min / max, ``[C]``.
        sample: calibration values per channel, ``[C, S]``.
        bits: bit width.
        schemes: subset of ``asymmetric``, ``symmetric``.
        granularities: subset of ``per_tensor`` (layer-wise), ``per_channel``.
        overflow: zero-point overflow policy for the asymmetric scheme (see :func:`resolve_zero_point_overflow`).
        loss: ``mse`` or ``cosine`` (1 - cosine similarity) of x̂ vs x.
        alphas: range shrink factors tried per candidate (``(1.0,)``: min/max); the best is kept (per channel
            for channel-wise candidates, one for layer-wise ones).

    Returns:
        one dict per candidate: ``granularity``, ``scheme``, ``loss``, ``scale``, ``zero_point``, ``qmin``,
        ``qmax`` (per channel ``[C]``, equal entries for layer-wise), ``overflow`` (number of overflowing groups).
    """
    out = []
    for gran in granularities:
        for scheme in schemes:
            sym = scheme == 'symmetric'
            lo, hi = (lo_c, hi_c) if gran == 'per_channel' else (lo_c.min().expand_as(lo_c),
                                                                  hi_c.max().expand_as(hi_c))
            best, best_err = None, None
            for a in alphas:  # small grid; vectorized over channels and values
                s, z, qn, qx, over = _params(lo * a, hi * a, bits, sym, overflow)
                xq = fake_quant_affine(sample, s[:, None], z[:, None], qn[:, None], qx[:, None])
                err_c = (xq - sample).square().mean(dim=1)
                err = err_c if gran == 'per_channel' else err_c.mean().expand_as(err_c)
                if best is None:
                    best, best_err = [s, z, qn, qx, over], err
                else:
                    better = err < best_err
                    best = [torch.where(better, new, old) for new, old in zip((s, z, qn, qx, over), best)]
                    best_err = torch.where(better, err, best_err)
            s, z, qn, qx, over = best
            xq = fake_quant_affine(sample, s[:, None], z[:, None], qn[:, None], qx[:, None])
            n_over = int(over.sum()) if gran == 'per_channel' else int(over[:1].sum())
            out.append(dict(granularity=gran, scheme=scheme, loss=float(_loss(sample, xq, loss)), scale=s,
                            zero_point=z, qmin=qn, qmax=qx, overflow=n_over))
    return out


@register_quantizer('qhyvit')
class HybridQuantizer(Quantizer):
    """Uniform activation quantizer whose scheme and granularity are chosen per layer by calibration loss.

    At ``freeze`` every candidate in ``schemes`` × ``granularities`` is scored on the calibration values and
    the lowest loss wins (ties go to the earlier candidate: asymmetric before symmetric, layer-wise before
    channel-wise with the defaults). Asymmetric candidates handle zero-point overflow with ``overflow``.
    The choice is stored in buffers (``symmetric_``, ``channelwise_``, ``losses``) with the parameters, so a
    saved state reloads it; ``choice`` describes it.

    Paper vs code choices:
        * Q-HyViT ranks the candidates with a Hessian-guided loss (as PTQ4ViT); a quantizer sees no gradients,
          so the loss here is the MSE (or 1 - cosine) of x̂ vs x. Depthwise / grouped convolutions are always
          channel-wise in Q-HyViT: pass ``granularities=('per_channel',)`` for those sites.

    Args:
        bits: bit width in [2, 16].
        channel_axis: the channel axis (``-1`` tokens, ``1`` ``NCHW``).
        schemes: candidate schemes, subset of ``('asymmetric', 'symmetric')``.
        granularities: candidate granularities, subset of ``('per_tensor', 'per_channel')``.
        overflow: ``clamp_range``, ``symmetric`` or ``none`` (see :func:`resolve_zero_point_overflow`).
        loss: ``mse`` or ``cosine``.
        range_method: ``minmax``, or ``mse`` (also try ranges shrunk by ``linspace(*alpha_range, search_steps)``).
        search_steps, alpha_range: the shrink grid of ``mse``.
        max_samples: bound on the calibration values kept to score the candidates.
    """

    def __init__(self, bits: int = 8, channel_axis: int = -1, schemes=SCHEMES, granularities=GRANULARITIES,
                 overflow: str = 'clamp_range', loss: str = 'mse', range_method: str = 'minmax', search_steps: int = 20,
                 alpha_range=(0.5, 1.0), max_samples: int = 1 << 18):
        self.schemes = tuple(schemes)
        self.granularities = tuple(granularities)
        for s in self.schemes:
            check_choice(s, 'schemes', SCHEMES)
        for g in self.granularities:
            check_choice(g, 'granularities', GRANULARITIES)
        if not self.schemes or not self.granularities:
            raise QuantizerError('schemes and granularities need at least one candidate each: allowed values are '
                                 f'{list(SCHEMES)} and {list(GRANULARITIES)}')
        self.channel_axis = int(channel_axis)
        super().__init__(bits, PerChannel(self.channel_axis) if self.granularities[0] == 'per_channel' else PerTensor())
        self.overflow = check_choice(overflow, 'overflow', OVERFLOW_POLICIES)
        self.loss = check_choice(loss, 'loss', LOSSES)
        self.range_method = check_choice(range_method, 'range_method', ('minmax', 'mse'))
        if search_steps < 1 or not 0 < alpha_range[0] <= alpha_range[1]:
            raise QuantizerError(f'search_steps={search_steps}, alpha_range={alpha_range} are invalid: '
                                 'need search_steps >= 1 and 0 < alpha_range[0] <= alpha_range[1]')
        self.search_steps = int(search_steps)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.max_samples = int(max_samples)
        for name in ('scale', 'zero_point', 'qmin', 'qmax', 'losses'):
            self.register_buffer(name, torch.empty(0))
        self.register_buffer('symmetric_', torch.tensor(False))
        self.register_buffer('channelwise_', torch.tensor(False))
        self.register_buffer('overflowed', torch.tensor(0))
        self._reset_observer()

    def _reset_observer(self):
        self._obs = GroupObserver(PerChannel(self.channel_axis), (), self.max_samples, where=lambda: self.where)

    def _observe(self, x):
        self._obs.observe(x)

    def _compute_params(self):
        obs = self._obs
        alphas = (1.0, ) if self.range_method == 'minmax' else \
            tuple(torch.linspace(*self.alpha_range, self.search_steps).tolist())
        cands = evaluate_candidates(obs.lo, obs.hi, obs.sample(), self.bits, self.schemes, self.granularities,
                                    self.overflow, self.loss, alphas)
        losses = torch.tensor([c['loss'] for c in cands])
        best = cands[int(losses.argmin())]  # first minimum: ties go to the earlier candidate
        channelwise = best['granularity'] == 'per_channel'
        shape = obs.param_shape if channelwise else ()
        pick = (lambda t: t.reshape(shape)) if channelwise else (lambda t: t[0].reshape(()))
        self.scale = pick(best['scale']).clamp_min(MIN_SCALE)
        self.zero_point = pick(best['zero_point'])
        self.qmin = pick(best['qmin'])
        self.qmax = pick(best['qmax'])
        self.losses = losses
        self.symmetric_ = torch.tensor(best['scheme'] == 'symmetric')
        self.channelwise_ = torch.tensor(channelwise)
        self.overflowed = torch.tensor(best['overflow'])
        self._sync_granularity()

    def _sync_granularity(self):
        self.granularity = PerChannel(self.channel_axis) if bool(self.channelwise_) else PerTensor()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._sync_granularity()

    @property
    def choice(self) -> dict:
        """The chosen scheme and granularity with the loss of every candidate."""
        names = [f'{g}/{s}' for g in self.granularities for s in self.schemes]
        return dict(scheme='symmetric' if bool(self.symmetric_) else 'asymmetric',
                    granularity='per_channel' if bool(self.channelwise_) else 'per_tensor',
                    overflowed_groups=int(self.overflowed),
                    losses={n: float(v) for n, v in zip(names, self.losses.tolist())})

    def fake_quant(self, x):
        return fake_quant_affine(x, self.scale.to(x.dtype), self.zero_point.to(x.dtype), self.qmin.to(x.dtype),
                                 self.qmax.to(x.dtype))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes in ``[qmin, qmax]`` of each group."""
        return quantize_affine(x, self.scale.to(x.dtype), self.zero_point.to(x.dtype), self.qmin.to(x.dtype),
                               self.qmax.to(x.dtype))

    def extra_repr(self):
        return (f'bits={self.bits}, channel_axis={self.channel_axis}, schemes={self.schemes}, '
                f'granularities={self.granularities}, overflow={self.overflow}, loss={self.loss}')
