"""PTQ4ViT's twin uniform quantizers for post-softmax and post-GELU values."""
from __future__ import annotations

import torch

from .base import Quantizer, round_ste
from .errors import QuantizerError
from .functional import MIN_SCALE
from .granularity import PerChannel, PerHead, PerTensor, require_granularity
from .range_search import RangeSearch, alpha_grid, error_sum, first_argmin
from .registry import register_quantizer
from .step_scorer import affine_levels, build_step_scorer, step_scorer_applies
from .workspace import release_workspace

#: PTQ4ViT's fixed bound of the negative post-GELU range (GELU's minimum is about -0.16997)
GELU_NEG_BOUND = 0.16997


def _fake_quant_twin(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``clamp(round(x / Δ), qmin, qmax)·Δ`` with an element-wise Δ (the range each value falls in)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.clamp(round_ste(x / scale), qmin, qmax) * scale
    return (x / scale).round_().clamp_(qmin, qmax).mul_(scale)


@register_quantizer('twin_softmax')
class TwinSoftmaxQuantizer(Quantizer):
    """Twin uniform quantizer for attention probabilities in [0, 1].

    Two ranges share the code space, one bit choosing the range and ``b - 1`` bits of unsigned code each:
    ``R1 = [0, split)`` with ``Δ1 = split / (2^(b-1) - 1)`` and ``R2 = [split, 1]`` with
    ``Δ2 = 1 / (2^(b-1) - 1)``, ``split = 2^-i`` (so ``Δ2 / Δ1`` is a power of two and the two ranges align
    with a shift). ``x̂ = clamp(round(x/Δ1), 0, 2^(b-1) - 1)·Δ1`` for ``x < split``, else
    ``clamp(round(x/Δ2), 0, 2^(b-1) - 1)·Δ2``; the code reported by :meth:`quantize` is the first for R1 and
    the second plus ``2^(b-1)`` for R2, in ``[0, 2^b - 1]``.

    Paper vs code choices:
        * PTQ4ViT scores the candidates ``i`` with a Hessian-guided metric that needs the task loss; this
          quantizer scores them by the L2 error of x̂ vs x over all calibration values (the candidates are fixed,
          so in the same single pass; the method layer can run its own search through :meth:`set_split`).

    Args:
        bits: bit width in [2, 16] (one bit selects the range).
        granularity: ``per_tensor`` or ``per_head`` (one split per head).
        split_exponents: candidates ``i`` of ``split = 2^-i``.
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored.
    """

    def __init__(self, bits: int = 8, granularity='per_tensor', split_exponents=tuple(range(16)),
                 max_samples: int | None = None):
        super().__init__(bits, granularity)
        require_granularity(self.granularity, dict(per_tensor=PerTensor, per_head=PerHead, per_channel=PerChannel),
                            'twin_softmax', dynamic=False)
        self.split_exponents = tuple(split_exponents)
        if not self.split_exponents or not all(isinstance(i, int) and i >= 0 for i in self.split_exponents):
            raise QuantizerError(f'split_exponents={split_exponents!r} is invalid: allowed values are integers >= 0')
        self.half_max = 2**(self.bits - 1) - 1
        self.max_samples = max_samples
        self.register_buffer('split', torch.empty(0))
        self._reset_observer()

    def _reset_observer(self):
        self._search = RangeSearch(self.granularity, (), 'with_stats', self.max_samples)
        self._scorer = None

    def _observe(self, x):
        scored = self._search.observe(x, self.where)
        if scored is not None:
            xs, _ = scored
            scorer = self._step_scorer(xs)
            errors = None if scorer is None else scorer.errors(xs)  # None: a value outside [0, 1]
            if errors is not None:
                self._search.accumulate(errors[None, :])
                return
            self._search.accumulate(torch.stack([error_sum(xs, self._fq(xs, torch.tensor(2.0**-i)))
                                                 for i in self.split_exponents], dim=1))

    def _step_scorer(self, xs):
        """The histogram scorer of the split candidates where it applies to ``xs`` (``[1, S]`` probabilities in
        [0, 1]), else None. The output drops at the split, so the steps are told by their codes (:meth:`quantize`
        codes: R1 below R2)."""
        if not step_scorer_applies(xs, len(self.split_exponents)):
            return None
        if self._scorer is None:
            splits = torch.tensor([2.0**-i for i in self.split_exponents])
            d1 = (splits / self.half_max).clamp_min(MIN_SCALE)
            k = torch.arange(self.half_max + 1, dtype=torch.float32)
            levels = torch.cat([k[None, :] * d1[:, None], (k * (1.0 / self.half_max)).expand(len(splits), -1)], 1)

            def quantize(x, idx):
                return self._fq(x, splits[idx, None])

            def codes(x, idx):
                return self._codes(x, splits[idx, None])

            self._scorer = build_step_scorer(quantize, levels, 0.0, 1.0, codes=codes)
        return self._scorer or None

    def _end_pass(self):
        return self._search.end_pass(self.where)

    def _compute_params(self):
        if self._scorer:
            release_workspace()
        splits = torch.tensor([2.0**-i for i in self.split_exponents], device=self._search.scores.device)
        self._best = first_argmin(self._search.scores)
        self.split = self._search.reshape(splits[self._best])

    def _search_info(self):
        exps = torch.tensor(self.split_exponents)[self._best.cpu()]
        info = dict(range_method='twin_split', split_exponent=exps.tolist() if exps.numel() > 1 else int(exps),
                    **self._search.info())
        if self._scorer:
            info['histogram_scored'] = self._scorer.info()
        return info

    def set_split(self, split: torch.Tensor) -> None:
        """Set the split point(s) (e.g. from an external search) and mark the quantizer calibrated."""
        self.split = torch.as_tensor(split, dtype=torch.float32).clone()
        self.calibrated_.fill_(True)
        self.version += 1

    def _fq(self, x, split):
        split = split.to(x.dtype)
        d1 = (split / self.half_max).clamp_min(MIN_SCALE)
        d2 = torch.full_like(split, 1.0 / self.half_max)
        return _fake_quant_twin(x, torch.where(x < split, d1, d2), 0, self.half_max)

    def fake_quant(self, x):
        return self._fq(x, self.split)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Codes in ``[0, 2^b - 1]``: R1 codes below ``2^(b-1)``, R2 codes from ``2^(b-1)`` up."""
        return self._codes(x, self.split)

    def _codes(self, x, split):
        split = split.to(x.dtype)
        d1 = (split / self.half_max).clamp_min(MIN_SCALE)
        low = torch.clamp(torch.round(x / d1), 0, self.half_max)
        d2 = torch.full_like(split, 1.0 / self.half_max)
        high = torch.clamp(torch.round(x / d2), 0, self.half_max) + (self.half_max + 1)
        return torch.where(x < split, low, high)


@register_quantizer('twin_gelu')
class TwinGeluQuantizer(Quantizer):
    """Twin uniform quantizer for post-GELU values: a fixed negative range and a searched positive range.

    Signed ``b``-bit codes: negative values use ``Δn = neg_bound / 2^(b-1)`` with codes in ``[-2^(b-1), 0]``
    (covering GELU's minimum ``-0.16997`` exactly), non-negative values use the searched ``Δp`` with codes in
    ``[0, 2^(b-1) - 1]``. ``x̂ = clamp(round(x/Δn), -2^(b-1), 0)·Δn`` for ``x < 0``, else
    ``clamp(round(x/Δp), 0, 2^(b-1) - 1)·Δp``.

    Paper vs code choices:
        * PTQ4ViT searches ``Δp = α·max(x)/(2^(b-1) - 1)`` for α in ``linspace(0.01, 1.2, 100)`` with a
          Hessian-guided metric; here the metric is the L2 error of x̂ vs x over all calibration values (scored
          in a second pass, once max(x) is known).

    Args:
        bits: bit width in [2, 16].
        granularity: ``per_tensor`` or ``per_channel`` (static; one Δp per channel).
        neg_bound: magnitude of the negative range.
        search_steps, alpha_range: the α grid.
        max_samples: ``None`` (every value is scored) or the number of values of each observed tensor scored.
    """

    def __init__(self, bits: int = 8, granularity='per_tensor', neg_bound: float = GELU_NEG_BOUND,
                 search_steps: int = 100, alpha_range=(0.01, 1.2), max_samples: int | None = None):
        super().__init__(bits, granularity)
        require_granularity(self.granularity, dict(per_tensor=PerTensor, per_channel=PerChannel), 'twin_gelu',
                            dynamic=False)
        if not float(neg_bound) > 0:
            raise QuantizerError(f'neg_bound={neg_bound!r} is invalid: allowed values are floats > 0')
        self.alphas = alpha_grid(alpha_range, search_steps)
        self.neg_bound = float(neg_bound)
        self.search_steps = int(search_steps)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.half = 2**(self.bits - 1)
        self.max_samples = max_samples
        self.register_buffer('scale_pos', torch.empty(0))
        self.register_buffer('scale_neg', torch.tensor(self.neg_bound / self.half))
        self._reset_observer()

    def _reset_observer(self):
        self._search = RangeSearch(self.granularity, (), 'after_stats', self.max_samples)
        self._base = None
        self._scorer = None

    @property
    def calibration_passes(self):
        return self._search.passes_planned

    def _observe(self, x):
        scored = self._search.observe(x, self.where)
        if scored is not None:
            # the negative range is fixed, so only the positive values' error depends on the candidate: score
            # Q_p(max(x, 0)) against max(x, 0) (the same ranking as the full error, a constant less)
            pos = scored[0].clamp_min(0)
            scorer = self._step_scorer(pos)
            errors = None if scorer is None else scorer.errors(pos)  # None: a value outside the calibrated range
            if errors is not None:
                self._search.accumulate(errors[None, :])
                return
            errs = []
            for a in self.alphas:  # small grid; vectorized over groups and values
                dp = self._base * a
                errs.append(error_sum(pos, self._fq_pos(pos, dp)))
            self._search.accumulate(torch.stack(errs, dim=1))

    def _step_scorer(self, pos):
        """The histogram scorer of the α grid where it applies to ``pos`` (``[1, S]``), else None."""
        if not step_scorer_applies(pos, len(self.alphas)):
            return None
        if self._scorer is None:
            scale = self._base[0] * torch.tensor(self.alphas, device=self._base.device)
            levels = affine_levels(scale, torch.zeros_like(scale), 0, self.half - 1)

            def quantize(x, idx):
                return self._fq_pos(x, scale[idx, None])

            # clamp_min(0) leaves -0.0 as it is: the range starts there
            self._scorer = build_step_scorer(quantize, levels, -0.0, float(self._search.hi[0].clamp_min(0)))
        return self._scorer or None

    def _end_pass(self):
        more = self._search.end_pass(self.where)
        if self._base is None:
            self._base = (self._search.hi.clamp_min(0) / (self.half - 1)).clamp_min(MIN_SCALE)[:, None]
        return more

    def _compute_params(self):
        if self._scorer:
            release_workspace()
        self._best = first_argmin(self._search.scores)
        alphas = torch.tensor(self.alphas, device=self._base.device)
        self.scale_pos = self._search.reshape(self._base[:, 0] * alphas[self._best])

    def _search_info(self):
        picked = torch.tensor(self.alphas)[self._best.cpu()]
        info = dict(range_method='twin_gelu_alpha', alpha=float(picked) if picked.numel() == 1 else dict(
            min=float(picked.min()), max=float(picked.max()), mean=float(picked.mean())), **self._search.info())
        if self._scorer:
            info['histogram_scored'] = self._scorer.info()
        return info

    def _fq(self, x, scale_pos, scale_neg):
        scale_pos, scale_neg = scale_pos.to(x.dtype), scale_neg.to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            # round(x/Δn) <= 0 for x < 0 and round(x/Δp) >= 0 for x >= 0, so one clamp to [-2^(b-1), 2^(b-1) - 1]
            # applies both ranges' bounds
            return _fake_quant_twin(x, torch.where(x < 0, scale_neg, scale_pos), -self.half, self.half - 1)
        # the same values without a boolean select: Q_p(max(x, 0)) + Q_n(min(x, 0)), each part being exactly 0
        # where the other range applies
        pos = self._fq_pos(x.clamp_min(0), scale_pos, inplace=True)
        return pos.add_(x.clamp_max(0).div_(scale_neg).round_().clamp_(-self.half, 0).mul_(scale_neg))

    def _fq_pos(self, x, scale_pos, inplace: bool = False):
        """``clamp(round(x/Δp), 0, 2^(b-1) - 1)·Δp`` of non-negative values (``inplace``: ``x`` is a scratch)."""
        t = x.div_(scale_pos) if inplace else x.div(scale_pos)
        return t.round_().clamp_(0, self.half - 1).mul_(scale_pos)

    def fake_quant(self, x):
        return self._fq(x, self.scale_pos, self.scale_neg)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Signed codes in ``[-2^(b-1), 2^(b-1) - 1]``."""
        neg = torch.clamp(torch.round(x / self.scale_neg.to(x.dtype)), -self.half, 0)
        pos = torch.clamp(torch.round(x / self.scale_pos.to(x.dtype)), 0, self.half - 1)
        return torch.where(x < 0, neg, pos)
