"""FQ-ViT (Lin et al., IJCAI 2022): power-of-two factor for post-LayerNorm inputs, log-int-softmax."""
from __future__ import annotations

from ..quantizers import check_bits
from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .recipe import RoleRecipe, uniform


@QUANT_METHODS.register_module(name='FQViT')
class FQViT(RoleRecipe):
    """FQ-ViT.

    * post-LayerNorm inputs: the Power-of-Two Factor quantizer (global Δ from min/max, per-channel α_c ∈ {0..3} by
      L2 error, channel step ``Δ·2^(α_c − 3)``);
    * attention: Log-Int-Softmax on the logits site: the logits are quantized to 8 bits, the softmax computed with
      the integer exponential, and the probabilities log2-quantized to ``softmax_bits`` (FQ-ViT: 4, whatever the
      activation bits); the probabilities are not quantized again before attn@v (a layer taking them, as
      EfficientFormer v2's talking-head conv, quantizes its input uniformly);
    * every other activation: per-tensor asymmetric uniform with min/max ranges; weights: per-output-channel
      asymmetric min/max (FQ-ViT's MinMax observers).

    Paper vs code: ``softmax_rounding='log'`` rounds ``-log2 p`` (paper), ``'linear'`` the reciprocal's nearest power
    of two (code); ``softmax_underflow='clamp'`` (paper) or ``'zero'`` (code).

    Args:
        softmax_bits: bits of the log2 probabilities.
        logit_bits: bits of the quantized logits feeding the integer softmax.
        softmax_rounding, softmax_underflow: see above.
        **kwargs: see :class:`~quant_hooks.methods.base.PTQMethod`.
    """

    def __init__(self, softmax_bits: int = 4, logit_bits: int = 8, softmax_rounding: str = 'log',
                 softmax_underflow: str = 'clamp', **kwargs):
        super().__init__(**kwargs)
        self.softmax_bits = check_bits(softmax_bits, 'softmax_bits')
        self.logit_bits = check_bits(logit_bits, 'logit_bits')
        self.softmax_rounding = softmax_rounding
        self.softmax_underflow = softmax_underflow

    def weight_quantizer(self, site: QuantSite, bits: int):
        return uniform(bits, 'per_channel')

    def role_quantizer(self, site, slot, role, bits):
        if role == Role.ATTN_LOGITS:
            return dict(type='log_int_softmax', bits=self.softmax_bits, rounding=self.softmax_rounding,
                        underflow=self.softmax_underflow, logit_quantizer=uniform(self.logit_bits))
        if role == Role.POST_SOFTMAX and site.kind in ('matmul', 'act'):
            return None  # already log2-quantized by the softmax site
        if role == Role.POST_LN and site.layout(slot) is not None and site.layout(slot).channel_axis is not None:
            return dict(type='ptf', bits=bits, granularity='per_channel')
        return uniform(bits)

    def describe(self):
        return dict(super().describe(), softmax_bits=self.softmax_bits, logit_bits=self.logit_bits,
                    softmax_rounding=self.softmax_rounding, softmax_underflow=self.softmax_underflow)
