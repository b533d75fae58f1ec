"""A ViTDet-style plain ViT backbone for mmdet detectors, built from timm layers.

The backbone is a timm ``VisionTransformer`` trunk (patch embedding, absolute position embedding, pre-norm
``Block`` s) that keeps its stride-16 feature map as a 2-D grid: most blocks attend within non-overlapping
windows and a few attend globally (ViTDet, Li et al. 2022). The position embedding learned at the pre-training
resolution is resized (bicubic) to the input grid. Each block keeps timm's ``Attention`` module, so adapters can
class-swap it like any timm ViT. The simple feature pyramid neck lives in ``simple_feature_pyramid.py``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d, PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from ..registry import MODELS

# channel LayerNorm of NCHW maps, for the RPN / RoI heads of ViTDet configs (``norm_cfg=dict(type='quant_hooks.LN2d')``)
MODELS.register_module(name='LN2d', module=LayerNorm2d)


def window_partition(x: torch.Tensor, window_size: int,
                     pad_value: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a ``(B, H, W, C)`` grid into ``(B * nW, window_size**2, C)`` windows, padding H and W up to
    multiples of ``window_size`` with zeros (or with the per-channel ``pad_value``, ``(C,)``).

    Returns:
        The windows and the padded grid size ``(Hp, Wp)``.
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if (pad_h or pad_w) and pad_value is None:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    elif pad_h or pad_w:
        padded = pad_value.to(x.dtype).expand(B, H + pad_h, W + pad_w, C).clone()
        padded[:, :H, :W] = x
        x = padded
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window_size**2, C)`` back to ``(B, H, W, C)``."""
    Hp, Wp = padded_hw
    H, W = hw
    nh, nw = Hp // window_size, Wp // window_size
    B = windows.shape[0] // (nh * nw)
    x = windows.view(B, nh, nw, window_size, window_size, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


class WindowedBlock(Block):
    """timm's pre-norm ``Block`` on a ``(B, H, W, C)`` grid, attending within windows or globally.

    Parameters keep timm's names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), so
    timm ViT block weights load unchanged. As in ViTDet, the grid is padded after ``norm1`` (padding tokens are
    zeros inside the attention) and the MLP runs on the unpadded grid. A reparameterization that moves a
    per-channel shift into ``norm1`` (RepQ-ViT) sets ``pad_value`` to the value a zero becomes, so the padding
    tokens stay what they were.

    Args:
        window_size: side of the attention windows; 0 for global attention over the whole grid.
        **kwargs: timm ``Block`` arguments (``dim``, ``num_heads``, ``mlp_ratio``, ``qkv_bias``, ``drop_path`` ...).
    """

    def __init__(self, window_size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.window_size = window_size
        self.register_buffer('pad_value', None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # a (B, N, C) token sequence (class token kept): timm's own block, global attention
            if self.window_size > 0:
                raise ValueError('WindowedBlock got a (B, N, C) token sequence, which needs window_size=0')
            return super().forward(x)
        B, H, W, C = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            windows, padded_hw = window_partition(x, self.window_size, self.pad_value)
            x = window_unpartition(self.attn(windows), self.window_size, padded_hw, (H, W))
        else:
            x = self.attn(x.reshape(B, H * W, C)).view(B, H, W, C)
        x = shortcut + self.drop_path1(self.ls1(x))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


@MODELS.register_module()
class ViTDetBackbone(BaseModule):
    """Plain ViT backbone with windowed and global attention; returns the stride-``patch_size`` map.

    Args:
        img_size: pre-training image size; the position embedding holds ``(img_size / patch_size)**2`` positions.
        patch_size: patch size (the output stride).
        in_channels: image channels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        qkv_bias: bias in the qkv projection.
        drop_path_rate: stochastic depth, increasing linearly to this value over the blocks.
        window_size: attention window side of the windowed blocks.
        global_attn_indexes: indices of the blocks that attend globally (ViTDet ViT-B: 2, 5, 8, 11).
        pretrain_use_cls_token: the position embedding has a leading class-token entry (timm / MAE layout),
            which is ignored unless ``use_cls_token``.
        norm_eps: LayerNorm epsilon.
        init_values: layer-scale initial value (timm ``ls1`` / ``ls2``, as in DINOv2); ``None``: no layer scale.
        use_cls_token: run a class token through the blocks, as the pre-trained model did (needs every block
            global: ``window_size=0``); it is dropped from the output map.
        final_norm: apply the pre-trained model's final LayerNorm (timm ``norm``) to the output tokens.
        pos_embed_antialias: resize the position embedding with antialiasing (timm's ``dynamic_img_size`` way).
        pretrained: timm state dict to load at construction: a ``.safetensors`` / ``.pth`` path, or ``'imgfocus'``
            for the project's default ViT-S/14 (extracted by ``tools/install.sh``; see
            :mod:`quant_hooks.models.imgfocus_backbone`). Every key and shape must match.
        frozen: keep the backbone in eval mode with ``requires_grad=False`` (detector training leaves it as it is).
        init_cfg: mmengine initialisation config (e.g. ``dict(type='Pretrained', checkpoint=...)``).

    Attributes:
        weights_source: the file the weights came from (``pretrained``), or ``None``.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_channels: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, window_size: int = 14, global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
                 pretrain_use_cls_token: bool = True, norm_eps: float = 1e-6, init_values: float | None = None,
                 use_cls_token: bool = False, final_norm: bool = False, pos_embed_antialias: bool = False,
                 pretrained: str | None = None, frozen: bool = False, init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        for name, value in (('img_size', img_size), ('patch_size', patch_size), ('embed_dim', embed_dim),
                            ('depth', depth), ('num_heads', num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'ViTDetBackbone {name}={value!r} is invalid: allowed values are integers >= 1')
        if img_size % patch_size:
            raise ValueError(f'ViTDetBackbone img_size={img_size} is invalid: allowed values are multiples of '
                             f'patch_size={patch_size}')
        if embed_dim % num_heads:
            raise ValueError(f'ViTDetBackbone embed_dim={embed_dim} is invalid: allowed values are multiples of '
                             f'num_heads={num_heads}')
        if not isinstance(window_size, int) or window_size < 0:
            raise ValueError(f'ViTDetBackbone window_size={window_size!r} is invalid: allowed values are integers '
                             '>= 0 (0: every block attends globally)')
        global_attn_indexes = tuple(global_attn_indexes)
        bad = [i for i in global_attn_indexes if not isinstance(i, int) or not 0 <= i < depth]
        if bad:
            raise ValueError(f'ViTDetBackbone global_attn_indexes={global_attn_indexes} is invalid: allowed values '
                             f'are block indices in [0, {depth - 1}]')
        if use_cls_token and (window_size != 0 or not pretrain_use_cls_token):
            raise ValueError(f'ViTDetBackbone use_cls_token=True is invalid with window_size={window_size} and '
                             f'pretrain_use_cls_token={pretrain_use_cls_token}: a class token needs window_size=0 '
                             '(every block global) and pretrain_use_cls_token=True')
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.global_attn_indexes = global_attn_indexes
        self.window_size = window_size
        self.num_prefix_tokens = 1 if pretrain_use_cls_token else 0
        self.pretrain_grid = img_size // patch_size
        self.use_cls_token = use_cls_token
        self.pos_embed_antialias = pos_embed_antialias
        self.frozen = frozen
        self.weights_source = None

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_channels,
                                      embed_dim=embed_dim, output_fmt='NHWC', strict_img_size=False,
                                      dynamic_img_pad=True)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.pretrain_grid**2, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        norm_layer = _layer_norm(norm_eps)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            WindowedBlock(window_size=0 if i in global_attn_indexes else window_size, dim=embed_dim,
                          num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rates[i],
                          init_values=init_values, norm_layer=norm_layer) for i in range(depth))
        self.norm = norm_layer(embed_dim) if final_norm else None
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_linear)
        if pretrained is not None:
            self.load_pretrained(pretrained)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def load_pretrained(self, pretrained: str) -> None:
        """Load a timm ViT state dict strictly (see ``pretrained`` in the class docstring)."""
        from ..utils.checkpoint import load_state_dict_strict, load_torch_file
        if pretrained == 'imgfocus':
            from .imgfocus_backbone import default_backbone_path
            pretrained = str(default_backbone_path())
        load_state_dict_strict(self, load_torch_file(pretrained), source=f'pretrained backbone {pretrained}')
        self.weights_source = pretrained

    def init_weights(self) -> None:
        """Keep loaded pre-trained weights (mmengine's ``init_weights`` would re-initialise them otherwise)."""
        if self.weights_source is None:
            super().init_weights()

    def train(self, mode: bool = True) -> ViTDetBackbone:
        """A frozen backbone stays in eval mode."""
        return super().train(mode and not self.frozen)

    def abs_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """The position embedding resized to the ``(h, w)`` token grid, shaped ``(1, h, w, C)``."""
        g = self.pretrain_grid
        pos = self.pos_embed[:, self.num_prefix_tokens:].reshape(1, g, g, -1)
        if (g, g) == tuple(hw):
            return pos
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=tuple(hw), mode='bicubic', align_corners=False,
                            antialias=self.pos_embed_antialias)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """Images ``(B, 3, H, W)`` -> a one-element tuple with the ``(B, C, H/16, W/16)`` feature map."""
        x = self.patch_embed(x)
        x = x + self.abs_pos_embed(x.shape[1:3])
        if self.use_cls_token:
            B, H, W, C = x.shape
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
            x = torch.cat([cls, x.reshape(B, H * W, C)], dim=1)
        for block in self.blocks:
            x = block(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.use_cls_token:
            x = x[:, 1:].reshape(B, H, W, C)
        return (x.permute(0, 3, 1, 2).contiguous(), )


def _layer_norm(eps: float):
    def make(dim, **kwargs):
        return nn.LayerNorm(dim, eps=eps, **kwargs)
    return make


def _init_linear(module: nn.Module) -> None:
    """timm's ViT initialisation of linear layers (truncated normal weights, zero bias)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
