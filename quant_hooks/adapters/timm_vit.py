"""Sites of timm's ``VisionTransformer`` (ViT, DeiT, DINOv2 ...) classifiers."""
from __future__ import annotations

from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ..registry import MODEL_ADAPTERS
from ..sites import Role
from .timm_common import SiteCollector, TimmAdapter, transformer_block_sites, unwrap_timm


@MODEL_ADAPTERS.register_module()
class TimmViTAdapter(TimmAdapter):
    """Sites of a timm ``VisionTransformer`` (plain or DeiT-distilled), in network order.

    The patch-embedding conv (image input, tagged ``first``); per block: qkv (post-LN), q@kᵀ (q, k), attn@v
    (post-softmax, v), proj (attention output), fc1 (post-LN), fc2 (post-GELU); the classifier ``head`` (and
    DeiT's ``head_dist``; generic, tagged ``last``). Each attention and each MLP is a reconstruction block.
    timm's ``Attention`` is class-swapped (:class:`~quant_hooks.adapters.timm_common.QuantTimmAttention`) so the two
    matmuls are sites; with quantization off the model computes exactly what timm computes. Layers of other
    heads (attention pooling) become generic sites tagged ``other`` (or an error with ``strict=True``).

    Args:
        kinds: site kinds to wrap.
        strict: see :class:`~quant_hooks.adapters.timm_common.TimmAdapter`.
    """

    def _prepare(self, model):
        net, prefix = unwrap_timm(model)
        if not isinstance(net, VisionTransformer):
            raise TypeError(f'TimmViTAdapter expects a timm VisionTransformer, got {type(net).__name__}')
        col = SiteCollector(model, prefix)
        proj = getattr(net.patch_embed, 'proj', None)
        if not isinstance(proj, nn.Conv2d):
            raise TypeError(f'TimmViTAdapter expects a conv patch embedding (patch_embed.proj), got '
                            f'{type(proj).__name__}')
        col.layer('patch_embed.proj', Role.EMBED, 'patch_embed', {'first'})
        for i, block in enumerate(net.blocks):
            if type(block) is not Block:
                raise TypeError(f'blocks.{i}: TimmViTAdapter supports timm pre-norm Block only, got '
                                f'{type(block).__name__}')
            transformer_block_sites(col, f'blocks.{i}', block)
        for head in ('head', 'head_dist'):
            if isinstance(getattr(net, head, None), nn.Linear):
                col.layer(head, Role.GENERIC, head, {'last'})
        return self.finish(col)
