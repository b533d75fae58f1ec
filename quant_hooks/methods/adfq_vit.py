"""ADFQ-ViT (Neural Networks 186, 2025): per-patch outlier-aware quantizer on post-LayerNorm inputs, shift-log2 on
post-GELU inputs, and (with ``reconstruction``) the attention-score enhanced module-wise optimization."""
from __future__ import annotations

import math

from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .base import iter_quantizers
from .recipe import RoleRecipe, uniform

POST_LN_FORMS = ('per_token', 'per_token_static')


@QUANT_METHODS.register_module(name='ADFQViT')
class ADFQViT(RoleRecipe):
    """ADFQ-ViT; its module-wise optimization runs when ``reconstruction`` is given (``True`` or a dict of
    overrides, e.g. ``dict(iters=500)``).

    * post-LayerNorm inputs (qkv, fc1, patch merging): the per-patch outlier-aware quantizer (``ppoq``): values with
      ``|x| > outlier_threshold`` stay in float, the others get one (Δ_t, z_t) per token. ``post_ln_granularity``:
      ``per_token`` (default; dynamic, from each token's inlier min/max: any token count, as detection needs) or
      ``per_token_static`` (one calibrated scale per token position with the authors' per-token percentile search:
      classification at a fixed resolution, as the authors' code). The outlier ratio per site is recorded.
    * post-GELU inputs (fc2): the shift-log2 quantizer; ``shift_log2_form='paper'`` (base 2, clamped codes) or
      ``'code'`` (the authors' code: base √2, underflow to the shift), ``shift='calibrated'`` (a constant: the
      calibration minimum; hardware-friendly) or ``'current'`` (the authors' code: the minimum of each tensor).
    * q and k (the q@kᵀ operands): asymmetric uniform per tensor with the range × zero-point grid search (the
      ``mse`` search, which moves both ends of the range).
    * attention probabilities: log√2 (as RepQ-ViT, which the authors' code builds on).
    * every other activation (v, attention output, embedding, heads): per-tensor asymmetric uniform, percentile
      search. The attention logits stay in float.
    * weights: per-output-channel asymmetric uniform, percentile search; AdaRound comes with the module-wise
      optimization.
    * module-wise optimization (``reconstruction``; defaults from the paper): each attention module and each MLP
      module reconstructed separately, in network order (patch embedding and head layer-wise, as modules of one
      layer), inputs from the already-quantized model mixed with float ones (QDrop, probability 0.5); loss = output
      MSE + AdaRound regulariser (weight 0.01, β 20 → 2 after 20% warm-up) + for attention modules
      ``(1/λ)·T²·KL`` between float and quantized attention probabilities (T = 4, λ = 0.1, softmax over the key
      axis as the paper describes; ``loss_terms=[dict(type='AttentionKL', dim=1)]`` for the authors' code's head
      axis);
      AdaRound α by Adam lr 3e-3, the static uniform activation scales (q, k, v, attention output, embedding) by
      Adam lr 4e-5 with cosine decay to 0 (the dynamic per-token and log quantizers have no scale to learn);
      3000 iterations per module (the paper: 3000-5000), seed 1005. One iteration uses one recorded calibration
      batch: calibrate with batches of 32 for the paper's batch size.

    Args:
        outlier_threshold: α of the outlier-aware quantizer (authors' code: 5 for qkv inputs; the fc1 threshold is a
            command-line option there, 10 in their README); ``fc1_outlier_threshold`` sets the fc1 one apart.
        fc1_outlier_threshold: α for the MLP's first layer (``None``: ``outlier_threshold``).
        post_ln_granularity: ``per_token`` (dynamic) or ``per_token_static``.
        shift_log2_form: ``paper`` or ``code``.
        shift: ``calibrated``, ``current`` or a float.
        range_method: search of the other activations' ranges.
        w_range_method: per-channel weight range search.
        **kwargs: see :class:`~quant_hooks.methods.base.PTQMethod`.
    """

    reconstruction_defaults = dict(unit='module', iters=3000, w_lr=3e-3, a_lr=4e-5, a_lr_schedule='cosine',
                                   reg_weight=0.01, beta=(20.0, 2.0), warmup=0.2, qdrop_prob=0.5, seed=1005,
                                   loss_terms=[dict(type='AttentionKL', temperature=4.0, lam=0.1, dim=-1)])

    def __init__(self, outlier_threshold: float = 5.0, fc1_outlier_threshold: float | None = None,
                 post_ln_granularity: str = 'per_token', shift_log2_form: str = 'paper', shift='calibrated',
                 range_method: str = 'percentile', w_range_method: str = 'percentile', **kwargs):
        super().__init__(**kwargs)
        if post_ln_granularity not in POST_LN_FORMS:
            raise ValueError(f'post_ln_granularity={post_ln_granularity!r} is invalid: allowed values are '
                             f'{list(POST_LN_FORMS)}')
        for name, value in (('outlier_threshold', outlier_threshold), ('fc1_outlier_threshold',
                                                                       fc1_outlier_threshold)):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0 and not math.isnan(value)):
                raise ValueError(f'{name}={value!r} is invalid: allowed values are floats >= 0')
        self.outlier_threshold = float(outlier_threshold)
        self.fc1_outlier_threshold = None if fc1_outlier_threshold is None else float(fc1_outlier_threshold)
        self.post_ln_granularity = post_ln_granularity
        self.shift_log2_form = shift_log2_form
        self.shift = shift
        self.range_method = range_method
        self.w_range_method = w_range_method

    def weight_quantizer(self, site: QuantSite, bits: int):
        return uniform(bits, 'per_channel', range_method=self.w_range_method)

    def threshold_for(self, site: QuantSite) -> float:
        """The outlier threshold of a post-LN site: fc1's (the layer fed by a block's ``norm2``) or qkv's."""
        in_mlp = site.norm is not None and site.norm.name.endswith('norm2')
        if in_mlp and self.fc1_outlier_threshold is not None:
            return self.fc1_outlier_threshold
        return self.outlier_threshold

    def role_quantizer(self, site, slot, role, bits):
        if role == Role.ATTN_LOGITS:
            return None
        if role == Role.POST_LN:
            cfg = dict(type='ppoq', bits=bits, granularity=self.post_ln_granularity,
                       threshold=self.threshold_for(site))
            if self.post_ln_granularity == 'per_token_static':
                cfg['range_method'] = 'percentile'
            return cfg
        if role == Role.POST_GELU:
            return dict(type='shift_log2', bits=bits, form=self.shift_log2_form, shift=self.shift)
        if role in (Role.Q, Role.K):
            return uniform(bits, 'per_tensor', range_method='mse')
        if role == Role.POST_SOFTMAX:
            return dict(type='log_sqrt2', bits=bits, granularity='per_tensor')
        return uniform(bits, 'per_tensor', range_method=self.range_method)

    def finish(self, sites, run_calibration):
        summary = super().finish(sites, run_calibration)
        return dict(summary, outlier_ratio=outlier_ratios(sites))

    def describe(self):
        return dict(super().describe(), outlier_threshold=self.outlier_threshold,
                    fc1_outlier_threshold=self.fc1_outlier_threshold, post_ln_granularity=self.post_ln_granularity,
                    shift_log2_form=self.shift_log2_form, shift=self.shift, range_method=self.range_method,
                    w_range_method=self.w_range_method)


def outlier_ratios(sites) -> dict[str, float]:
    """site:slot -> fraction of calibration values kept in float by an outlier-aware quantizer."""
    return {f'{site.name}:{slot}': round(float(q.outlier_ratio), 6) for site, slot, q in iter_quantizers(sites)
            if hasattr(q, 'outlier_ratio')}
