"""Sites of the ViTDet-style plain-ViT backbone (``quant_hooks.models.ViTDetBackbone``) in mmdet detectors."""
from __future__ import annotations

import torch
from timm.layers.attention import Attention, maybe_add_mask, resolve_self_attn_mask

from ..models.vitdet_backbone import ViTDetBackbone
from ..nn import QuantConv2d, QuantMatMul
from ..registry import MODEL_ADAPTERS
from ..sites import QuantSite, Role
from .base import wrap_linear_or_conv
from .mmdet_detector import MMDetDetectorAdapter


class QuantTimmAttention(Attention):
    """timm's ``Attention`` with q@kᵀ and attn@v as :class:`QuantMatMul` sites.

    While neither matmul holds an active quantizer (none installed, or all disabled and not observing) the forward
    is timm's own (fused ``scaled_dot_product_attention`` where timm enables it), so the float result is
    bit-exact; otherwise it runs timm's explicit path with the two products quantized.
    """

    qk_matmul: QuantMatMul
    av_matmul: QuantMatMul

    @classmethod
    def convert(cls, module: Attention, name: str) -> 'QuantTimmAttention':
        """Swap ``module``'s class in place (parameters untouched) and add the two matmul sites."""
        if isinstance(module, cls):
            return module
        if type(module) is not Attention:
            raise TypeError(f'{name}: expected timm.layers.Attention, got {type(module).__module__}.'
                            f'{type(module).__name__}')
        if getattr(module, 'gate', None) is not None:
            raise TypeError(f'{name}: gated timm attention is not supported (its gate linear is not a site)')
        module.__class__ = cls
        module.qk_matmul = QuantMatMul(f'{name}.qk_matmul')
        module.av_matmul = QuantMatMul(f'{name}.av_matmul')
        return module

    def matmuls_active(self) -> bool:
        """Whether a matmul quantizer is installed and enabled (or observing)."""
        for mm in (self.qk_matmul, self.av_matmul):
            for q in (mm.a_quantizer, mm.b_quantizer):
                if q is not None and (q.enabled or q.observing):
                    return True
        return False

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if not self.matmuls_active():
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = self.qk_matmul(q, k.transpose(-2, -1))
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = self.av_matmul(attn, v)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        return self.proj_drop(x)


@MODEL_ADAPTERS.register_module()
class ViTDetAdapter(MMDetDetectorAdapter):
    """Sites of a detector whose backbone is :class:`~quant_hooks.models.ViTDetBackbone`.

    Per block: qkv (post-LN), q@kᵀ (q, k), attn@v (post-softmax, v), proj (attention output), fc1 (post-LN),
    fc2 (post-GELU); and the patch-embedding conv (image input, tagged ``first``). Attention modules
    (``backbone.blocks.N.attn``) and MLPs (``backbone.blocks.N.mlp``) are the reconstruction blocks. Windowed and
    global blocks have the same sites. ``scope='full'`` adds the simple feature pyramid and the heads.
    """

    def backbone_sites(self, model):
        backbone = model.backbone
        if not isinstance(backbone, ViTDetBackbone):
            raise TypeError(f'ViTDetAdapter expects a quant_hooks ViTDetBackbone, got {type(backbone).__name__}')
        sites = []

        def layer(name, role, block, tags=frozenset({'backbone'})):
            module = wrap_linear_or_conv(model, name)
            kind = 'conv' if isinstance(module, QuantConv2d) else 'linear'
            sites.append(QuantSite(name, kind, module, {'input': role, 'weight': Role.WEIGHT}, block, tags))

        layer('backbone.patch_embed.proj', Role.EMBED, 'backbone.patch_embed', {'first', 'backbone'})
        for i, _ in enumerate(backbone.blocks):
            b = f'backbone.blocks.{i}'
            attn = QuantTimmAttention.convert(model.get_submodule(f'{b}.attn'), f'{b}.attn')
            layer(f'{b}.attn.qkv', Role.POST_LN, f'{b}.attn')
            sites.append(QuantSite(f'{b}.attn.qk_matmul', 'matmul', attn.qk_matmul, {'a': Role.Q, 'b': Role.K},
                                   f'{b}.attn', {'backbone'}))
            sites.append(QuantSite(f'{b}.attn.av_matmul', 'matmul', attn.av_matmul,
                                   {'a': Role.POST_SOFTMAX, 'b': Role.V}, f'{b}.attn', {'backbone'}))
            layer(f'{b}.attn.proj', Role.ATTN_OUT, f'{b}.attn')
            layer(f'{b}.mlp.fc1', Role.POST_LN, f'{b}.mlp')
            layer(f'{b}.mlp.fc2', Role.POST_GELU, f'{b}.mlp')
        return sites
