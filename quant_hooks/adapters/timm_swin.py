"""Sites of timm's ``SwinTransformer`` classifiers."""
from __future__ import annotations

import torch
from timm.models.swin_transformer import PatchMerging, SwinTransformer, WindowAttention
from torch import nn

from ..nn import QuantMatMul, QuantSoftmax
from ..registry import MODEL_ADAPTERS
from ..sites import Role
from .base import ClassSwapMixin
from .timm_common import SiteCollector, TimmAdapter, mlp_sites, unwrap_timm


class QuantTimmWindowAttention(ClassSwapMixin, WindowAttention):
    """timm's ``WindowAttention`` with q@kᵀ and attn@v as :class:`QuantMatMul` sites and the softmax (after the
    relative position bias and the shift mask) as a :class:`QuantSoftmax` site.

    Computes exactly the unfused path of ``WindowAttention.forward`` when the sites hold no quantizer.
    """

    qk_matmul: QuantMatMul
    attn_softmax: QuantSoftmax
    av_matmul: QuantMatMul

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = self.qk_matmul(q, k.transpose(-2, -1))
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_softmax(attn)
        attn = self.attn_drop(attn)
        x = self.av_matmul(attn, v)
        x = x.transpose(1, 2).reshape(B_, N, -1)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


@MODEL_ADAPTERS.register_module()
class TimmSwinAdapter(TimmAdapter):
    """Sites of a timm ``SwinTransformer``, in network order.

    The patch-embedding conv (image input, tagged ``first``); per stage: the patch-merging reduction (post-LN;
    timm merges at the start of stages 1..3), then per block: qkv (post-LN), q@kᵀ (q, k), the softmax logits,
    attn@v (post-softmax, v), proj (attention output), fc1 (post-LN), fc2 (post-GELU); the classifier ``head.fc`` (generic, tagged
    ``last``). Window attentions and MLPs are the reconstruction blocks.

    Args:
        kinds: site kinds to wrap.
        strict: see :class:`~quant_hooks.adapters.timm_common.TimmAdapter`.
    """

    def _prepare(self, model):
        net, prefix = unwrap_timm(model)
        if not isinstance(net, SwinTransformer):
            raise TypeError(f'TimmSwinAdapter expects a timm SwinTransformer, got {type(net).__name__}')
        col = SiteCollector(model, prefix)
        col.layer('patch_embed.proj', Role.EMBED, 'patch_embed', {'first'})
        for i, stage in enumerate(net.layers):
            if isinstance(stage.downsample, PatchMerging):
                col.layer(f'layers.{i}.downsample.reduction', Role.POST_LN, f'layers.{i}.downsample')
                col.set_norm(f'layers.{i}.downsample.reduction', f'layers.{i}.downsample.norm')
            for j, block in enumerate(stage.blocks):
                b = f'layers.{i}.blocks.{j}'
                attn = QuantTimmWindowAttention.convert(block.attn, col.full(f'{b}.attn'))
                col.layer(f'{b}.attn.qkv', Role.POST_LN, f'{b}.attn')
                col.attention(f'{b}.attn', attn)
                col.layer(f'{b}.attn.proj', Role.ATTN_OUT, f'{b}.attn')
                mlp_sites(col, f'{b}.mlp', block.mlp)
                # timm pads the grid only where the resolution is not a multiple of the window (not at 224)
                col.set_norm(f'{b}.attn.qkv', f'{b}.norm1')
                col.set_norm(f'{b}.mlp.fc1', f'{b}.norm2')
        fc = getattr(net.head, 'fc', None)
        if isinstance(fc, nn.Linear):
            col.layer('head.fc', Role.GENERIC, 'head', {'last'})
        return self.finish(col)
