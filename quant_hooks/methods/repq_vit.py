"""RepQ-ViT (Li et al., ICCV 2023): scale reparameterization of post-LayerNorm activations, log√2 softmax."""
from __future__ import annotations

from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .recipe import RoleRecipe, uniform
from .reparam import reparam_groups, reparameterize


@QUANT_METHODS.register_module(name='RepQViT')
class RepQViT(RoleRecipe):
    """RepQ-ViT.

    * post-LayerNorm inputs (qkv, fc1, patch merging; every site whose adapter names the LayerNorm feeding it):
      calibrated channel-wise (asymmetric uniform, percentile search), then **reparameterized** into the LayerNorm's
      γ/β and the next layer's weight and bias, leaving a layer-wise quantizer (see
      :func:`~quant_hooks.methods.reparam.reparameterize`); the next layer's weight quantizer is calibrated again
      on the rescaled weight. Post-LN sites without a known LayerNorm (or fed by a GroupNorm) keep channel-wise
      scales and are listed in the results.
    * post-softmax: log√2 quantizer (Δ by the percentile search on the probabilities; codes beyond the range map
      to 0, as in the authors' code).
    * weights: per-output-channel asymmetric uniform with the percentile search of the authors' code
      (``w_range_method='minmax'`` for plain min/max).
    * every other activation (q, k, v, attention output, post-GELU, embedding, generic): per-tensor asymmetric
      uniform, percentile search. The attention logits stay in float.
    * detection protocol: the authors quantize every Conv2d and Linear of the detector (adapter ``scope='full'``)
      with the patch embedding and the prediction layers at 8 bits
      (``overrides=[dict(tags=['first', 'last'], w_bits=8, a_bits=8)]``), calibrated on one val image
      (``configs/_base_/datasets/coco_calibration_repq_vit.py``); the defaults here use seeded train images.

    Args:
        range_method: activation range search (``percentile``, ``mse`` or ``minmax``).
        w_range_method: weight range search per output channel.
        reparameterize: fold the channel-wise post-LN scales into the model (``False`` keeps channel-wise
            quantizers on those inputs: the same numbers before rounding, a costlier integer kernel).
        **kwargs: see :class:`~quant_hooks.methods.base.PTQMethod`.
    """

    def __init__(self, range_method: str = 'percentile', w_range_method: str = 'percentile',
                 reparameterize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.range_method = range_method
        self.w_range_method = w_range_method
        self.reparameterize = bool(reparameterize)

    def weight_quantizer(self, site: QuantSite, bits: int):
        return uniform(bits, 'per_channel', range_method=self.w_range_method)

    def role_quantizer(self, site, slot, role, bits):
        if role == Role.ATTN_LOGITS:
            return None
        if role == Role.POST_SOFTMAX:
            return dict(type='log_sqrt2', bits=bits, granularity='per_tensor')
        if role == Role.POST_LN and site.norm is not None:
            return uniform(bits, 'per_channel', range_method=self.range_method)
        return uniform(bits, 'per_tensor', range_method=self.range_method)

    def finish(self, sites, run_calibration):
        summary = super().finish(sites, run_calibration)
        groups, skipped = reparam_groups(sites) if self.reparameterize else ([], [])
        for group in groups:
            self.model_state_keys += reparameterize(group)
            self.calibrate_weights(group.sites)
        return dict(summary, reparameterized=dict(layernorms=len(groups), sites=sum(len(g.sites) for g in groups),
                                                  skipped=skipped))

    def describe(self):
        return dict(super().describe(), range_method=self.range_method, w_range_method=self.w_range_method,
                    reparameterize=self.reparameterize)
