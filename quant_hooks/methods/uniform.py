"""Plain uniform baselines: MinMax, Percentile and OMSE (EasyQuant-style) range choices."""
from __future__ import annotations

from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .base import PTQMethod


class UniformPTQ(PTQMethod):
    """Uniform quantizers on every slot, one range estimator for all activations.

    Args:
        range_method: ``minmax``, ``percentile`` or ``mse`` (see ``UniformQuantizer``).
        w_granularity: weight granularity; ``per_channel`` means per output channel.
        a_granularity: activation granularity by meaning (``per_tensor``, ``per_token``, ``per_token_static``,
            ``per_channel``, ``per_head``), resolved against each slot's layout: ``per_channel`` is the channel
            axis of a token input, of an NCHW conv input and of kᵀ alike; a meaning a slot has no axis for (per
            head on a linear input) fails naming the site. The attention logits stay in float (the softmax input
            is not a quantized tensor in these baselines).
        w_symmetric, a_symmetric: symmetric (signed, z = 0) instead of asymmetric.
        w_range_method: weight range estimator; defaults to ``range_method``.
        **kwargs: see :class:`PTQMethod` (``w_bits``, ``a_bits``, ``overrides``, ``float_roles``).
    """

    range_method = 'minmax'

    def __init__(self, w_granularity='per_channel', a_granularity='per_tensor', w_symmetric: bool = False,
                 a_symmetric: bool = False, w_range_method: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.w_granularity = w_granularity
        self.a_granularity = a_granularity
        self.w_symmetric = w_symmetric
        self.a_symmetric = a_symmetric
        self.w_range_method = w_range_method or self.range_method

    def weight_quantizer(self, site: QuantSite, bits: int):
        return dict(type='uniform', bits=bits, granularity=self.w_granularity, symmetric=self.w_symmetric,
                    range_method=self.w_range_method)

    def act_quantizer(self, site: QuantSite, slot: str, role: str, bits: int):
        if role == Role.ATTN_LOGITS:
            return None
        return dict(type='uniform', bits=bits, granularity=self.a_granularity, symmetric=self.a_symmetric,
                    range_method=self.range_method)

    def describe(self):
        return dict(super().describe(), range_method=self.range_method, w_range_method=self.w_range_method,
                    w_granularity=self.w_granularity, a_granularity=self.a_granularity,
                    w_symmetric=self.w_symmetric, a_symmetric=self.a_symmetric)


@QUANT_METHODS.register_module(name='MinMax')
class MinMaxPTQ(UniformPTQ):
    """Uniform quantizers with min/max ranges."""
    range_method = 'minmax'


@QUANT_METHODS.register_module(name='Percentile')
class PercentilePTQ(UniformPTQ):
    """Uniform quantizers with the best of several percentile ranges (RepQ-ViT / ADFQ-ViT code)."""
    range_method = 'percentile'


@QUANT_METHODS.register_module(name='OMSE')
class OMSEPTQ(UniformPTQ):
    """Uniform quantizers whose range minimises the quantization MSE (OMSE / EasyQuant-style grid search)."""
    range_method = 'mse'
