"""Sites of mmdet's ``SwinTransformer`` backbone (Mask R-CNN / Cascade Mask R-CNN Swin detectors)."""
from __future__ import annotations

from mmdet.models.backbones.swin import ShiftWindowMSA, SwinTransformer, WindowMSA

from ..layout import AV_LAYOUTS, HEADS, QK_LAYOUTS
from ..nn import QuantConv2d, QuantMatMul, QuantSoftmax
from ..registry import MODEL_ADAPTERS
from ..sites import NormInfo, QuantSite, Role
from .base import ClassSwapMixin, wrap_linear_or_conv
from .mmdet_detector import MMDetDetectorAdapter


class QuantWindowMSA(ClassSwapMixin, WindowMSA):
    """mmdet's window attention with q@kᵀ and attn@v as :class:`QuantMatMul` sites and its softmax as a
    :class:`QuantSoftmax` site (the logits, after the relative position bias and the shift mask).

    Computes exactly ``WindowMSA.forward`` when the sites hold no quantizer.
    """

    qk_matmul: QuantMatMul
    attn_softmax: QuantSoftmax
    av_matmul: QuantMatMul

    input_offset = None

    def forward(self, x, mask=None):
        if self.input_offset is not None:
            x = x + self.input_offset
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = self.qk_matmul(q, k.transpose(-2, -1))
        relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        attn = attn + relative_position_bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_softmax(attn)
        attn = self.attn_drop(attn)
        x = self.av_matmul(attn, v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class QuantShiftWindowMSA(ClassSwapMixin, ShiftWindowMSA):
    """mmdet's shifted-window attention whose window padding can take a per-channel value.

    ``ShiftWindowMSA`` pads the normalised grid with zeros. When a reparameterization moves a per-channel shift
    into the preceding LayerNorm (RepQ-ViT), a zero of the original model becomes ``pad_value``; padding
    ``query - pad_value`` with zeros and adding ``pad_value`` back at the window attention's input keeps the
    padding tokens what they were. With ``pad_value`` unset (or no padding needed) it is ``ShiftWindowMSA``.
    """

    added_modules = {}

    def forward(self, query, hw_shape):
        pad_value = getattr(self, 'pad_value', None)
        H, W = hw_shape
        if pad_value is None or (H % self.window_size == 0 and W % self.window_size == 0):
            return super().forward(query, hw_shape)
        self.w_msa.input_offset = pad_value
        try:
            return super().forward(query - pad_value, hw_shape)
        finally:
            self.w_msa.input_offset = None


@MODEL_ADAPTERS.register_module()
class MMDetSwinAdapter(MMDetDetectorAdapter):
    """Sites of a detector whose backbone is mmdet's ``SwinTransformer``.

    Per block: qkv (post-LN), q@kᵀ (q, k), the softmax input (attention logits), attn@v (post-softmax, v), proj
    (attention output), fc1 (post-LN),
    fc2 (post-GELU); per stage hand-over: the patch-merging reduction (post-LN); and the patch-embedding conv
    (image input, tagged ``first``). Attention modules (``...blocks.N.attn``) and MLPs (``...blocks.N.ffn``)
    are the reconstruction blocks.
    """

    def backbone_sites(self, model):
        backbone = model.backbone
        if not isinstance(backbone, SwinTransformer):
            raise TypeError(f'MMDetSwinAdapter expects an mmdet SwinTransformer backbone, got '
                            f'{type(backbone).__name__}')
        p = 'backbone'
        sites = []

        def linear(name, role, block, tags=()):
            module = wrap_linear_or_conv(model, name)
            kind = 'conv' if isinstance(module, QuantConv2d) else 'linear'
            sites.append(QuantSite(name, kind, module, {'input': role, 'weight': Role.WEIGHT}, block, tags))

        linear(f'{p}.patch_embed.projection', Role.EMBED, f'{p}.patch_embed', {'first', 'backbone'})
        for i, stage in enumerate(backbone.stages):
            for j, _ in enumerate(stage.blocks):
                b = f'{p}.stages.{i}.blocks.{j}'
                attn_name = f'{b}.attn.w_msa'
                shift = QuantShiftWindowMSA.convert(model.get_submodule(f'{b}.attn'), f'{b}.attn')
                if 'pad_value' not in shift._buffers:
                    shift.register_buffer('pad_value', None)
                attn = QuantWindowMSA.convert(model.get_submodule(attn_name), attn_name)
                linear(f'{attn_name}.qkv', Role.POST_LN, f'{b}.attn', {'backbone'})
                sites[-1].norm = NormInfo(f'{b}.norm1', model.get_submodule(f'{b}.norm1'), f'{b}.attn', shift)
                sites.append(QuantSite(f'{attn_name}.qk_matmul', 'matmul', attn.qk_matmul,
                                       {'a': Role.Q, 'b': Role.K}, f'{b}.attn', {'backbone'}, QK_LAYOUTS))
                sites.append(QuantSite(f'{attn_name}.attn_softmax', 'act', attn.attn_softmax,
                                       {'input': Role.ATTN_LOGITS}, f'{b}.attn', {'backbone'}, {'input': HEADS}))
                sites.append(QuantSite(f'{attn_name}.av_matmul', 'matmul', attn.av_matmul,
                                       {'a': Role.POST_SOFTMAX, 'b': Role.V}, f'{b}.attn', {'backbone'}, AV_LAYOUTS))
                linear(f'{attn_name}.proj', Role.ATTN_OUT, f'{b}.attn', {'backbone'})
                linear(f'{b}.ffn.layers.0.0', Role.POST_LN, f'{b}.ffn', {'backbone'})
                sites[-1].norm = NormInfo(f'{b}.norm2', model.get_submodule(f'{b}.norm2'))
                linear(f'{b}.ffn.layers.1', Role.POST_GELU, f'{b}.ffn', {'backbone'})
            if stage.downsample is not None:
                linear(f'{p}.stages.{i}.downsample.reduction', Role.POST_LN, f'{p}.stages.{i}.downsample',
                       {'backbone'})
                norm = f'{p}.stages.{i}.downsample.norm'
                sites[-1].norm = NormInfo(norm, model.get_submodule(norm))
        return sites
