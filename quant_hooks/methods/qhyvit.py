"""Q-HyViT (hybrid ViTs): per-layer granularity and scheme choice with zero-point overflow handling."""
from __future__ import annotations

from collections import defaultdict

from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .base import iter_quantizers
from .recipe import RoleRecipe, is_grouped_conv, uniform


@QUANT_METHODS.register_module(name='QHyViT')
class QHyViT(RoleRecipe):
    """Q-HyViT's calibration for hybrid ViTs (MobileViT v1/v2, EfficientFormer v1/v2), usable on any model.

    * every activation except the attention probabilities: the ``qhyvit`` quantizer, which chooses per layer between
      layer-wise and channel-wise scales (the channel axis comes from the slot's layout: the last axis of token
      inputs, axis 1 of NCHW conv inputs) and between asymmetric and symmetric codes by the calibration loss, and
      resolves zero-point overflow (``overflow``: ``clamp_range`` / ``symmetric`` / ``none``); the inputs of
      depthwise / grouped convolutions are always channel-wise, as in Q-HyViT; slots without a channel axis choose
      the scheme only.
    * attention probabilities: twin uniform (Q-HyViT builds on PTQ4ViT).
    * weights: per-output-channel asymmetric uniform, MSE search.
    * the bridge blocks (where a conv stage hands over to a transformer stage and back, found from the structure by
      the hybrid adapters) are recorded in the results. With ``reconstruction`` (``True`` or a dict of overrides)
      each bridge group is reconstructed jointly as one unit (the members' common ancestor module, or the run of a
      Sequential's children between them) and every other block on its own, BRECQ-style: AdaRound weights (Adam
      lr 1e-3, regulariser 0.01, β 20 → 2 after 20% warm-up), inputs from the quantized model only
      (``qdrop_prob=1``), 20k iterations per unit, seed 1005. The ``qhyvit`` and twin quantizers keep their
      calibrated scales (only uniform quantizers' scales are learned).

    Paper vs this recipe: Q-HyViT ranks the candidates with a Hessian-guided loss; a quantizer sees no gradients
    here, so the loss is the MSE of x̂ vs x (``loss='cosine'`` for 1 − cosine). The attention logits stay in float.

    Args:
        overflow: zero-point overflow policy.
        loss: ``mse`` or ``cosine``.
        range_method: ``minmax`` or ``mse`` (candidate ranges shrunk by a grid as well).
        **kwargs: see :class:`~quant_hooks.methods.base.PTQMethod`.
    """

    reconstruction_defaults = dict(unit='block', group_tag='bridge_', iters=20000, w_lr=1e-3, a_lr=4e-5,
                                   reg_weight=0.01, beta=(20.0, 2.0), warmup=0.2, qdrop_prob=1.0, seed=1005)

    def __init__(self, overflow: str = 'clamp_range', loss: str = 'mse', range_method: str = 'mse', **kwargs):
        super().__init__(**kwargs)
        self.overflow = overflow
        self.loss = loss
        self.range_method = range_method

    def weight_quantizer(self, site: QuantSite, bits: int):
        return uniform(bits, 'per_channel', range_method='mse')

    def role_quantizer(self, site, slot, role, bits):
        if role == Role.ATTN_LOGITS:
            return None
        if role == Role.POST_SOFTMAX and site.kind == 'matmul':
            return dict(type='twin_softmax', bits=bits)
        layout = site.layout(slot)
        cfg = dict(type='qhyvit', bits=bits, overflow=self.overflow, loss=self.loss, range_method=self.range_method)
        if layout is None or layout.channel_axis is None:
            return dict(cfg, granularities=('per_tensor',))
        cfg['channel_axis'] = layout.channel_axis
        if slot == 'input' and is_grouped_conv(site):
            cfg['granularities'] = ('per_channel',)
        return cfg

    def finish(self, sites, run_calibration):
        summary = super().finish(sites, run_calibration)
        return dict(summary, choices=choice_counts(sites), bridges=bridge_groups(sites))

    def describe(self):
        return dict(super().describe(), overflow=self.overflow, loss=self.loss, range_method=self.range_method)


def choice_counts(sites) -> dict[str, int]:
    """How many ``qhyvit`` quantizers chose each (scheme, granularity)."""
    counts: dict[str, int] = defaultdict(int)
    for _, _, q in iter_quantizers(sites, weights=False):
        choice = getattr(q, 'choice', None)
        if isinstance(choice, dict):
            counts[f"{choice['granularity']}/{choice['scheme']}"] += 1
    return dict(sorted(counts.items()))


def bridge_groups(sites) -> dict[str, list[str]]:
    """``bridge_<k>`` tag -> the sites of that hand-over (conv → transformer or back)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for site in sites:
        for tag in sorted(t for t in site.tags if t.startswith('bridge_')):
            groups[tag].append(site.name)
    return dict(sorted(groups.items(), key=lambda kv: int(kv[0].split('_')[1])))
