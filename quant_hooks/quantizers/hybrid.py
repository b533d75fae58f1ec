"""Q-HyViT helpers: scheme and granularity chosen by calibration loss, and zero-point overflow handling."""
from __future__ import annotations

import torch

from .base import Quantizer
from .errors import QuantizerError, check_choice
from .functional import MIN_SCALE, affine_params, fake_quant_affine, quantize_affine
from .granularity import PerChannel, PerTensor
from .range_search import RangeSearch, alpha_grid
from .registry import register_quantizer
from .channel_scorer import CHANNEL_SCORER_MIN_VALUES, MAX_BOUNDARIES, ChannelStepSums
from .step_scorer import affine_first_keys

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


def _candidate_params(lo_c, hi_c, bits, schemes, granularities, overflow, alphas):
    """Parameters of every (granularity, scheme, α) candidate: a list of ``(granularity, scheme, [(scale, zp,
    qmin, qmax, overflow) per α])``, each tensor ``[C]``."""
    out = []
    for gran in granularities:
        lo, hi = (lo_c, hi_c) if gran == 'per_channel' else (lo_c.min().expand_as(lo_c), hi_c.max().expand_as(hi_c))
        for scheme in schemes:
            out.append((gran, scheme, [_params(lo * a, hi * a, bits, scheme == 'symmetric', overflow) for a in alphas]))
    return out


@torch.no_grad()
def candidate_sums(sample: torch.Tensor, params, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per channel sums that score every candidate: ``[C, K, A, 3]`` with the squared error, ``x̂·x`` and ``x̂²``
    of candidate K at shrink factor A, summed over the values of ``sample`` (``[C, S]``, no autograd).

    Each candidate's ``x̂`` and products go to two buffers laid out like ``sample``, made once per call (about
    twice as fast as fresh tensors per candidate; the layout keeps the sums' order, so the numbers are those of
    plain expressions)."""
    xq, tmp = torch.empty_like(sample), torch.empty_like(sample)
    sums = []
    for _, _, per_alpha in params:
        row = []
        for s, z, qn, qx, _ in per_alpha:  # small grid; vectorized over channels and values
            fake_quant_affine(sample, s[:, None], z[:, None], qn[:, None], qx[:, None], out=xq)
            err = _weighted(torch.sub(xq, sample, out=tmp).square_(), weight).sum(1)
            cross = _weighted(torch.mul(xq, sample, out=tmp), weight).sum(1)
            row.append(torch.stack([err, cross, _weighted(xq.square_(), weight).sum(1)], dim=1))
        sums.append(torch.stack(row, dim=1))
    return torch.stack(sums, dim=1)


def _weighted(t: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return t if weight is None else t.mul_(weight)


def choose_candidates(params, sums: torch.Tensor, x_sq: torch.Tensor, count: int, loss: str) -> list[dict]:
    """Best α of each candidate and its loss, from :func:`candidate_sums` accumulated over all values.

    Args:
        params: from :func:`_candidate_params`.
        sums: ``[C, K, A, 3]`` accumulated sums.
        x_sq: ``[C]`` sum of ``x²`` per channel.
        count: number of values (all channels).
        loss: ``mse`` or ``cosine``.
    """
    out = []
    for k, (gran, scheme, per_alpha) in enumerate(params):
        err = sums[:, k, :, 0]  # [C, A]
        if gran == 'per_channel':
            best = err.argmin(dim=1)  # first minimum: ties go to the smaller α
        else:
            best = err.sum(0).argmin().expand(err.shape[0])
        picked = sums[:, k].gather(1, best[:, None, None].expand(-1, 1, 3))[:, 0]  # [C, 3]
        if loss == 'mse':
            value = picked[:, 0].sum() / count
        else:
            norm = torch.sqrt(picked[:, 2].sum() * x_sq.sum())
            value = 1.0 - picked[:, 1].sum() / torch.clamp(norm, min=1e-12)
        stacked = [torch.stack([t[i] for t in per_alpha], dim=1) for i in range(5)]  # each [C, A]
        s, z, qn, qx, over = [t.gather(1, best[:, None])[:, 0] for t in stacked]
        n_over = int(over.sum()) if gran == 'per_channel' else int(over[:1].sum())
        out.append(dict(granularity=gran, scheme=scheme, loss=float(value), scale=s, zero_point=z, qmin=qn, qmax=qx,
                        overflow=n_over))
    return out


def evaluate_candidates(lo_c: torch.Tensor, hi_c: torch.Tensor, sample: torch.Tensor, bits: int,
                        schemes=SCHEMES, granularities=GRANULARITIES, overflow: str = 'clamp_range',
                        loss: str = 'mse', alphas=(1.0, )) -> list[dict]:
    """Calibration loss of every (granularity, scheme) candidate on the values ``sample``.

    Args:
        lo_c, hi_c: per-channel observed min / max, ``[C]``.
        sample: calibration values per channel, ``[C, S]``.
        bits: bit width.
        schemes: subset of ``asymmetric``, ``symmetric``.
        granularities: subset of ``per_tensor`` (layer-wise), ``per_channel``.
        overflow: zero-point overflow policy for the asymmetric scheme (see :func:`resolve_zero_point_overflow`).
        loss: ``mse`` or ``cosine`` (1 - cosine similarity) of x̂ vs x.
        alphas: range shrink factors tried per candidate (``(1.0,)``: min/max); the best (lowest squared error)
            is kept, per channel for channel-wise candidates, one for layer-wise ones.

    Returns:
        one dict per candidate: ``granularity``, ``scheme``, ``loss``, ``scale``, ``zero_point``, ``qmin``,
        ``qmax`` (per channel ``[C]``, equal entries for layer-wise), ``overflow`` (number of overflowing groups).
    """
    check_choice(loss, 'loss', LOSSES)
    params = _candidate_params(lo_c, hi_c, bits, schemes, granularities, overflow, alphas)
    sums = candidate_sums(sample.float(), params).double()
    return choose_candidates(params, sums, sample.double().square().sum(1), sample.numel(), loss)


@register_quantizer('qhyvit')
class HybridQuantizer(Quantizer):
    """Uniform activation quantizer whose scheme and granularity are chosen per layer by calibration loss.

    Every candidate in ``schemes`` × ``granularities`` is scored on all calibration values (a second pass, once
    the per-channel ranges are known) and the lowest loss wins (ties go to the earlier candidate: asymmetric
    before symmetric, layer-wise before channel-wise with the defaults). Asymmetric candidates handle zero-point overflow with ``overflow``.
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
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored.
    """

    def __init__(self, bits: int = 8, channel_axis: int = -1, schemes=SCHEMES, granularities=GRANULARITIES,
                 overflow: str = 'clamp_range', loss: str = 'mse', range_method: str = 'minmax', search_steps: int = 20,
                 alpha_range=(0.5, 1.0), max_samples: int | None = None):
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
        grid = alpha_grid(alpha_range, search_steps)
        self.alphas = (1.0, ) if self.range_method == 'minmax' else tuple(grid)
        self.search_steps = int(search_steps)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.max_samples = max_samples
        for name in ('scale', 'zero_point', 'qmin', 'qmax', 'losses'):
            self.register_buffer(name, torch.empty(0))
        self.register_buffer('symmetric_', torch.tensor(False))
        self.register_buffer('channelwise_', torch.tensor(False))
        self.register_buffer('overflowed', torch.tensor(0))
        self._reset_observer()

    def _reset_observer(self):
        self._search = RangeSearch(PerChannel(self.channel_axis), (), 'after_stats', self.max_samples)
        self._params = None
        self._x_sq = None
        self._scorer = None

    @property
    def calibration_passes(self):
        return self._search.passes_planned

    def _observe(self, x):
        scored = self._search.observe(x, self.where)
        if scored is not None:
            xs, weight = scored
            if self._channel_scorer(xs, weight) and self._scorer.add(xs):
                return
            self._accumulate(candidate_sums(xs, self._params, weight), xs.double().square().sum(1))

    def _accumulate(self, sums, x_sq):
        self._search.accumulate(sums)
        self._x_sq = x_sq if self._x_sq is None else self._x_sq + x_sq

    def _channel_scorer(self, xs, weight) -> bool:
        """Whether ``xs`` can go to the exact per-channel step sums (:class:`ChannelStepSums`: the sums of
        :func:`candidate_sums` in float64, from every value's step), built on first use."""
        if weight is not None or xs.dtype != torch.float32 or xs.shape[1] < CHANNEL_SCORER_MIN_VALUES:
            return False
        if self._scorer is None:
            self._scorer = self._build_channel_scorer()
        return bool(self._scorer)

    def _build_channel_scorer(self):
        """:class:`ChannelStepSums` of the candidates, or False where it does not apply (codes that do not span
        ``2^bits`` levels, more than ``MAX_BOUNDARIES`` step boundaries, not a step function)."""
        stacked = [torch.stack([torch.stack(p[:4], dim=1) for p in per_alpha], dim=1)  # [C, A, 4]
                   for _, _, per_alpha in self._params]
        s, z, qn, qx = torch.stack(stacked, dim=1).flatten(1, 2).float().unbind(-1)  # each [C, K·A]
        if not bool((qx - qn + 1 == 2**self.bits).all()) or s.numel() * (2**self.bits - 1) > MAX_BOUNDARIES:
            return False
        levels = (qn[..., None] + torch.arange(2**self.bits, dtype=torch.float32) - z[..., None]) * s[..., None]
        layerwise = torch.tensor([gran == 'per_tensor' for gran, _, per_alpha in self._params for _ in per_alpha])

        def quantize(x, k):  # x: [C or 1, K', M]; the layer-wise candidates are the same in every channel
            g = x.shape[0]
            return fake_quant_affine(x, s[:g, k, None], z[:g, k, None], qn[:g, k, None], qx[:g, k, None])

        try:
            return ChannelStepSums(quantize, levels, self._search.lo, self._search.hi, layerwise,
                                   first_keys=self._first_keys(s, z, qn, qx, layerwise))
        except ValueError:
            return False

    def _first_keys(self, s, z, qn, qx, layerwise):
        """Where each candidate's steps start (:func:`affine_first_keys`); for the layer-wise candidates, the same in
        every channel, only the first channel's row (the one :class:`ChannelStepSums` reads)."""
        n = 2**self.bits
        keys = torch.empty(*s.shape, n - 1, dtype=torch.long)
        for cands, rows in ((~layerwise, s.shape[0]), (layerwise, 1)):
            if bool(cands.any()):
                keys[:rows, cands] = affine_first_keys(s[:rows, cands], z[:rows, cands], qn[:rows, cands],
                                                       qx[:rows, cands], n)
        return keys

    def _take_channel_sums(self):
        """Move what the step sums gathered into the candidates' scores."""
        got = self._scorer.take() if self._scorer else None
        if got is None:
            return
        n, s1, s2 = got
        c = self._scorer.levels.double()
        xq_x, xq_sq = (c * s1).sum(-1), (c.square() * n).sum(-1)  # [C, K·A]
        sums = torch.stack([s2[:, None] - 2 * xq_x + xq_sq, xq_x, xq_sq], dim=-1)
        self._accumulate(sums.reshape(c.shape[0], len(self._params), -1, 3), s2)

    def _end_pass(self):
        self._take_channel_sums()
        more = self._search.end_pass(self.where)
        if self._params is None:
            s = self._search
            self._params = _candidate_params(s.lo, s.hi, self.bits, self.schemes, self.granularities, self.overflow,
                                             self.alphas)
        return more

    def _compute_params(self):
        s = self._search
        cands = choose_candidates(self._params, s.scores, self._x_sq, s.scored_values, self.loss)
        losses = torch.tensor([c['loss'] for c in cands])
        best = cands[int(losses.argmin())]  # first minimum: ties go to the earlier candidate
        channelwise = best['granularity'] == 'per_channel'
        shape = s.param_shape if channelwise else ()
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

    def _search_info(self):
        info = dict(range_method=self.range_method, choice=self.choice, **self._search.info())
        if self._scorer:
            info['channel_scored'] = self._scorer.info()
        return info

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
