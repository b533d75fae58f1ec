"""Sites of the ViTDet-style plain-ViT backbone (``quant_hooks.models.ViTDetBackbone``) in mmdet detectors."""
from __future__ import annotations

from ..models.vitdet_backbone import ViTDetBackbone
from ..registry import MODEL_ADAPTERS
from ..sites import Role
from .mmdet_detector import MMDetDetectorAdapter
from .timm_common import SiteCollector, transformer_block_sites


@MODEL_ADAPTERS.register_module()
class ViTDetAdapter(MMDetDetectorAdapter):
    """Sites of a detector whose backbone is :class:`~quant_hooks.models.ViTDetBackbone`.

    Per block: qkv (post-LN), q@kᵀ (q, k), attn@v (post-softmax, v), proj (attention output), fc1 (post-LN),
    fc2 (post-GELU); and the patch-embedding conv (image input, tagged ``first``). Attention modules
    (``backbone.blocks.N.attn``) and MLPs (``backbone.blocks.N.mlp``) are the reconstruction blocks. Windowed and
    global blocks have the same sites. ``scope='full'`` adds the simple feature pyramid and the heads. The blocks'
    timm ``Attention`` is class-swapped (:class:`~quant_hooks.adapters.timm_common.QuantTimmAttention`), which keeps
    timm's fused kernel while no matmul quantizer is active.
    """

    def backbone_sites(self, model):
        backbone = model.backbone
        if not isinstance(backbone, ViTDetBackbone):
            raise TypeError(f'ViTDetAdapter expects a quant_hooks ViTDetBackbone, got {type(backbone).__name__}')
        col = SiteCollector(model, 'backbone.')
        col.layer('patch_embed.proj', Role.EMBED, 'patch_embed', {'first', 'backbone'})
        for i, block in enumerate(backbone.blocks):
            transformer_block_sites(col, f'blocks.{i}', block, {'backbone'}, f'blocks.{i}' if block.window_size else '')
        return col.sites
