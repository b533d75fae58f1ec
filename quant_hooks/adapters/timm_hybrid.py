"""Sites of timm's hybrid conv / transformer classifiers: MobileViT v1 / v2, EfficientFormer v1 / v2.

The network is read as a sequence of *units* in execution order, each in ``conv`` form (NCHW feature maps
mixed by convolutions) or ``transformer`` form (tokens mixed by attention). Where the form changes from one
unit to the next, the representation is handed over (NCHW → tokens or back): those two units form a *bridge*,
which Q-HyViT reconstructs jointly. Bridges are found from this sequence, not from per-model index lists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.models import efficientformer as eff1
from timm.models import efficientformer_v2 as eff2
from timm.models.byobnet import ByobNet
from timm.models.mobilevit import LinearSelfAttention, MobileVitBlock, MobileVitV2Block
from timm.models.vision_transformer import Block
from torch import nn

from ..layout import HEADS, NCHW
from ..nn import QuantAct, QuantMatMul, QuantSoftmax
from ..registry import MODEL_ADAPTERS
from ..sites import QuantSite, Role
from .base import KINDS, ClassSwapMixin
from .timm_common import SiteCollector, TimmAdapter, mlp_sites, transformer_block_sites, unwrap_timm

CONV, TRANSFORMER = 'conv', 'transformer'


@dataclass
class Unit:
    """A run of the network in one form; ``sites`` are the quantization sites it holds."""

    name: str
    form: str
    sites: list[QuantSite] = field(default_factory=list)


def find_bridges(units: list[Unit]) -> list[tuple[Unit, Unit]]:
    """The pairs of consecutive units whose form differs (conv → transformer hand-over and back)."""
    return [(a, b) for a, b in zip(units, units[1:]) if a.form != b.form]


def tag_units(units: list[Unit]) -> list[tuple[Unit, Unit]]:
    """Tag every site with its unit's form, and the sites of bridge units with ``bridge`` and ``bridge_<k>``
    (k numbers the hand-overs in network order; a unit between two hand-overs carries both numbers)."""
    for unit in units:
        for site in unit.sites:
            site.tags = site.tags | {unit.form}
    bridges = find_bridges(units)
    for k, pair in enumerate(bridges):
        for unit in pair:
            for site in unit.sites:
                site.tags = site.tags | {'bridge', f'bridge_{k}'}
    return bridges


class UnitBuilder:
    """Records which sites of a :class:`SiteCollector` each unit adds."""

    def __init__(self, col: SiteCollector):
        self.col = col
        self.units: list[Unit] = []
        self._start = None

    def begin(self) -> None:
        self._start = len(self.col.sites)

    def end(self, name: str, form: str) -> None:
        sites = self.col.sites[self._start:]
        if sites:
            self.units.append(Unit(self.col.full(name), form, sites))


# -- class swaps: attention variants with their matmuls as sites -------------------------------------------------
class QuantLinearSelfAttention(ClassSwapMixin, LinearSelfAttention):
    """MobileViT v2's separable self-attention with its operands as :class:`QuantAct` sites.

    The context vector is ``Σ_N key · softmax(query)``: the query scores enter the softmax site
    (``attn_softmax``, attention logits), and the softmax scores (``score_act``, post-softmax) and the keys
    (``key_act``) are quantized before that product, like the operands of attn@v. Exact float computation without
    quantizers.
    """

    added_modules = {'attn_softmax': QuantSoftmax, 'score_act': QuantAct, 'key_act': QuantAct}
    attn_softmax: QuantSoftmax
    score_act: QuantAct
    key_act: QuantAct

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None = None) -> torch.Tensor:
        if x_prev is not None:
            raise NotImplementedError('QuantLinearSelfAttention quantizes self-attention only (x_prev must be None)')
        qkv = self.qkv_proj(x)
        query, key, value = qkv.split([1, self.embed_dim, self.embed_dim], dim=1)
        context_scores = self.attn_softmax(query)
        context_scores = self.attn_drop(context_scores)
        context_scores = self.score_act(context_scores)
        context_vector = (self.key_act(key) * context_scores).sum(dim=-1, keepdim=True)
        out = F.relu(value) * context_vector.expand_as(value)
        out = self.out_proj(out)
        out = self.out_drop(out)
        return out


class QuantEfficientFormerAttention(ClassSwapMixin, eff1.Attention):
    """EfficientFormer v1 token attention with q@kᵀ and attn@v as sites (scale applied after q@kᵀ)."""

    qk_matmul: QuantMatMul
    attn_softmax: QuantSoftmax
    av_matmul: QuantMatMul

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x)
        qkv = qkv.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = self.qk_matmul(q, k.transpose(-2, -1)) * self.scale
        attn = attn + self.get_attention_biases(x.device)
        attn = self.attn_softmax(attn)
        x = self.av_matmul(attn, v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
        x = self.proj(x)
        return x


class QuantAttention2d(ClassSwapMixin, eff2.Attention2d):
    """EfficientFormer v2 attention on NCHW maps (talking heads) with q@k, the softmax and attn@v as sites."""

    qk_matmul: QuantMatMul
    attn_softmax: QuantSoftmax
    av_matmul: QuantMatMul

    def forward(self, x):
        B, C, H, W = x.shape
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        q = self.q(x).reshape(B, self.num_heads, -1, self.N).permute(0, 1, 3, 2)
        k = self.k(x).reshape(B, self.num_heads, -1, self.N).permute(0, 1, 2, 3)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B, self.num_heads, -1, self.N).permute(0, 1, 3, 2)
        attn = self.qk_matmul(q, k) * self.scale
        attn = attn + self.get_attention_biases(x.device)
        attn = self.talking_head1(attn)
        attn = self.attn_softmax(attn)
        attn = self.talking_head2(attn)
        x = self.av_matmul(attn, v).transpose(2, 3)
        x = x.reshape(B, self.dh, self.resolution[0], self.resolution[1]) + v_local
        if self.upsample is not None:
            x = self.upsample(x)
        x = self.act(x)
        x = self.proj(x)
        return x


class QuantAttention2dDownsample(ClassSwapMixin, eff2.Attention2dDownsample):
    """EfficientFormer v2 downsampling attention (queries on the strided grid) with its matmuls and softmax as
    sites."""

    qk_matmul: QuantMatMul
    attn_softmax: QuantSoftmax
    av_matmul: QuantMatMul

    def forward(self, x):
        B, C, H, W = x.shape
        q = self.q(x).reshape(B, self.num_heads, -1, self.N2).permute(0, 1, 3, 2)
        k = self.k(x).reshape(B, self.num_heads, -1, self.N).permute(0, 1, 2, 3)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B, self.num_heads, -1, self.N).permute(0, 1, 3, 2)
        attn = self.qk_matmul(q, k) * self.scale
        attn = attn + self.get_attention_biases(x.device)
        attn = self.attn_softmax(attn)
        x = self.av_matmul(attn, v).transpose(2, 3)
        x = x.reshape(B, self.dh, self.resolution2[0], self.resolution2[1]) + v_local
        x = self.act(x)
        x = self.proj(x)
        return x


# -- per-family unit lists ---------------------------------------------------------------------------------------
def _conv_unit(ub: UnitBuilder, name: str, first_conv: str) -> None:
    """Every conv / linear of ``name`` as generic sites (the network's first conv: the image input)."""
    col = ub.col
    ub.begin()
    module = col.model.get_submodule(col.full(name))
    layers = [f'{name}.{n}' if n else name for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        if layer == first_conv:
            col.layer(layer, Role.EMBED, name, {'first'})
        else:
            col.generic(layer, name)
    ub.end(name, CONV)


def _mobilevit_units(ub: UnitBuilder, net: ByobNet, first_conv: str) -> None:
    col = ub.col
    _conv_unit(ub, 'stem', first_conv)
    for i, stage in enumerate(net.stages):
        for j, block in enumerate(stage):
            name = f'stages.{i}.{j}'
            if not isinstance(block, (MobileVitBlock, MobileVitV2Block)):
                _conv_unit(ub, name, first_conv)
                continue
            ub.begin()  # local representation: NCHW convs up to the unfold into patches
            col.generic(f'{name}.conv_kxk', f'{name}.conv_kxk')
            col.generic(f'{name}.conv_1x1', f'{name}.conv_1x1')
            ub.end(f'{name}.conv_1x1', CONV)
            for t, tblock in enumerate(block.transformer):
                tname = f'{name}.transformer.{t}'
                ub.begin()
                if isinstance(tblock, Block):
                    transformer_block_sites(col, tname, tblock)
                else:  # MobileViT v2 LinearTransformerBlock
                    attn = QuantLinearSelfAttention.convert(tblock.attn, col.full(f'{tname}.attn'))
                    a = f'{tname}.attn'
                    col.layer(f'{a}.qkv_proj', Role.POST_LN, a)
                    col.act(f'{a}.attn_softmax', attn.attn_softmax, Role.ATTN_LOGITS, a)  # [B, 1, P, N]
                    col.act(f'{a}.score_act', attn.score_act, Role.POST_SOFTMAX, a)
                    col.act(f'{a}.key_act', attn.key_act, Role.K, a, layout=NCHW)  # [B, C, P, N]
                    col.layer(f'{a}.out_proj', Role.ATTN_OUT, a)
                    mlp_sites(col, f'{tname}.mlp', tblock.mlp)
                ub.end(tname, TRANSFORMER)
            ub.begin()  # fold back to NCHW: projection (and fusion with the block input)
            col.generic(f'{name}.conv_proj', f'{name}.conv_proj')
            if getattr(block, 'conv_fusion', None) is not None:
                col.generic(f'{name}.conv_fusion', f'{name}.conv_fusion')
            ub.end(f'{name}.conv_proj', CONV)
    if any(isinstance(m, nn.Conv2d) for m in net.final_conv.modules()):
        _conv_unit(ub, 'final_conv', first_conv)


def _efficientformer_units(ub: UnitBuilder, net: eff1.EfficientFormer, first_conv: str) -> None:
    col = ub.col
    _conv_unit(ub, 'stem', first_conv)
    for i, stage in enumerate(net.stages):
        if isinstance(stage.downsample, eff1.Downsample):
            _conv_unit(ub, f'stages.{i}.downsample', first_conv)
        for j, block in enumerate(stage.blocks):
            name = f'stages.{i}.blocks.{j}'
            if isinstance(block, eff1.Flat):  # NCHW → tokens, no weights: the units around it differ in form
                continue
            if not isinstance(block, eff1.MetaBlock1d):
                _conv_unit(ub, name, first_conv)
                continue
            ub.begin()
            attn = QuantEfficientFormerAttention.convert(block.token_mixer, col.full(f'{name}.token_mixer'))
            a = f'{name}.token_mixer'
            col.layer(f'{a}.qkv', Role.POST_LN, a)
            col.attention(a, attn)
            col.layer(f'{a}.proj', Role.ATTN_OUT, a)
            mlp_sites(col, f'{name}.mlp', block.mlp)
            col.set_norm(f'{a}.qkv', f'{name}.norm1')
            col.set_norm(f'{name}.mlp.fc1', f'{name}.norm2')
            ub.end(name, TRANSFORMER)


def _attention2d_sites(col: SiteCollector, a: str, attn: nn.Module) -> None:
    """EfficientFormer v2 attention: its NCHW projections take the residual stream (no norm): generic."""
    if isinstance(attn, eff2.Attention2dDownsample):
        attn = QuantAttention2dDownsample.convert(attn, col.full(a))
        col.generic(f'{a}.q', a)
    else:
        attn = QuantAttention2d.convert(attn, col.full(a))
        if attn.stride_conv is not None:
            col.generic(f'{a}.stride_conv', a)
        col.generic(f'{a}.q', a)
    col.generic(f'{a}.k', a)
    col.generic(f'{a}.v', a)
    col.generic(f'{a}.v_local', a)
    if isinstance(attn, QuantAttention2d):
        col.matmul(f'{a}.qk_matmul', attn.qk_matmul, Role.Q, Role.K, a)
        col.layer(f'{a}.talking_head1', Role.GENERIC, a)
        col.act(f'{a}.attn_softmax', attn.attn_softmax, Role.ATTN_LOGITS, a, layout=HEADS)
        col.layer(f'{a}.talking_head2', Role.POST_SOFTMAX, a)  # its input is the softmax output
        col.matmul(f'{a}.av_matmul', attn.av_matmul, Role.GENERIC, Role.V, a)  # head-mixed probabilities
    else:
        col.attention(a, attn)
    col.layer(f'{a}.proj.conv', Role.POST_GELU, a)  # proj takes act(attn@v + v_local)


def _efficientformer_v2_units(ub: UnitBuilder, net: eff2.EfficientFormerV2, first_conv: str) -> None:
    col = ub.col
    _conv_unit(ub, 'stem', first_conv)
    for i, stage in enumerate(net.stages):
        ds = stage.downsample
        if isinstance(ds, eff2.Downsample):
            name = f'stages.{i}.downsample'
            if ds.attn is None:
                _conv_unit(ub, name, first_conv)
            else:
                ub.begin()
                col.generic(f'{name}.conv', name)
                _attention2d_sites(col, f'{name}.attn', ds.attn)
                ub.end(name, TRANSFORMER)
        for j, block in enumerate(stage.blocks):
            name = f'stages.{i}.blocks.{j}'
            if block.token_mixer is None:
                _conv_unit(ub, name, first_conv)
                continue
            ub.begin()
            _attention2d_sites(col, f'{name}.token_mixer', block.token_mixer)
            m = f'{name}.mlp'
            col.layer(f'{m}.fc1.conv', Role.GENERIC, m)
            if isinstance(block.mlp.mid, nn.Module) and hasattr(block.mlp.mid, 'conv'):
                col.layer(f'{m}.mid.conv', Role.POST_GELU, m)
            col.layer(f'{m}.fc2.conv', Role.POST_GELU, m)
            ub.end(name, TRANSFORMER)


FAMILIES = (
    ('MobileViT', lambda net: isinstance(net, ByobNet) and any(
        isinstance(m, (MobileVitBlock, MobileVitV2Block)) for m in net.modules()), _mobilevit_units),
    ('EfficientFormer', lambda net: isinstance(net, eff1.EfficientFormer), _efficientformer_units),
    ('EfficientFormerV2', lambda net: isinstance(net, eff2.EfficientFormerV2), _efficientformer_v2_units),
)


@MODEL_ADAPTERS.register_module()
class TimmHybridAdapter(TimmAdapter):
    """Sites of timm's hybrid ViTs: MobileViT v1 / v2 (``mobilevit_*``, ``mobilevitv2_*``), EfficientFormer
    (``efficientformer_l*``) and EfficientFormer v2 (``efficientformerv2_*``).

    Conv units (stem, inverted residual / pooling / conv-MLP blocks, downsampling convs) are generic sites;
    the network's first conv (timm's ``first_conv``) takes the image (``embed``, tagged ``first``). Transformer
    units get the transformer roles: qkv / fc1 post-LN, q@kᵀ (q, k), attn@v (post-softmax, v), proj (attention
    output), fc2 post-activation (``post_gelu`` names fc2's input also where the activation is SiLU). Variants:

    * MobileViT v2's separable attention has no matmul: its softmax scores (post-softmax) and keys (k) are
      ``act`` sites before their weighted sum.
    * EfficientFormer v2 attends on NCHW maps with no norm before q / k / v (generic inputs); the second
      talking-head conv takes the softmax output (post-softmax), so attn@v's left operand is generic; proj takes
      a GELU output (post-GELU), as do the MLP's depthwise and fc2 convs.

    Every site is tagged with its unit's form (``conv`` / ``transformer``); the units on both sides of a
    form change are tagged ``bridge`` and ``bridge_<k>`` (see :func:`find_bridges`). The classifier heads
    (``head``/``head_dist``/``head.fc``) are generic sites tagged ``last``.

    Args:
        kinds: site kinds to wrap.
        strict: see :class:`~quant_hooks.adapters.timm_common.TimmAdapter`.

    Attributes:
        units, bridges: the units and bridge pairs of the last prepared model.
    """

    def __init__(self, kinds=KINDS, strict: bool = False):
        super().__init__(kinds, strict)
        self.units: list[Unit] = []
        self.bridges: list[tuple[Unit, Unit]] = []

    def _prepare(self, model):
        net, prefix = unwrap_timm(model)
        for family, matches, build in FAMILIES:
            if matches(net):
                break
        else:
            raise TypeError(f'TimmHybridAdapter supports {[f[0] for f in FAMILIES]} (timm mobilevit*, '
                            f'mobilevitv2*, efficientformer_l*, efficientformerv2_*), got {type(net).__name__}')
        col = SiteCollector(model, prefix)
        ub = UnitBuilder(col)
        first_conv = dict(net.pretrained_cfg).get('first_conv', '') if hasattr(net, 'pretrained_cfg') else ''
        build(ub, net, first_conv)
        for head in ('head', 'head.fc', 'head_dist'):
            module = _maybe_submodule(net, head)
            if isinstance(module, nn.Linear):
                col.layer(head, Role.GENERIC, head, {'last'})
        self.units = ub.units
        self.bridges = tag_units(ub.units)
        return self.finish(col)


def _maybe_submodule(net: nn.Module, name: str):
    try:
        return net.get_submodule(name)
    except AttributeError:
        return None
