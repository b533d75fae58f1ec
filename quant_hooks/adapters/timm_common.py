"""What the timm adapters share: finding the timm network inside the model, collecting sites, the calibration
forward, and timm's standard ``Attention`` with q@kᵀ and attn@v as quantization sites."""
from __future__ import annotations

import torch
from timm.layers.attention import Attention, maybe_add_mask, resolve_self_attn_mask
from torch import nn

from ..layout import AV_LAYOUTS, HEADS, QK_LAYOUTS, Layout
from ..nn import QuantAct, QuantConv2d, QuantLinear, QuantMatMul, QuantSoftmax
from ..sites import NormInfo, QuantSite, Role
from .base import (KINDS, ClassSwapMixin, ModelAdapter, is_plain_conv2d, is_plain_linear,
                   wrap_linear_or_conv)


def unwrap_timm(model: nn.Module) -> tuple[nn.Module, str]:
    """The timm network and its module-name prefix: ``(model.model, 'model.')`` for a
    :class:`~quant_hooks.models.TimmClassifier`, ``(model, '')`` for a bare timm model."""
    inner = getattr(model, 'model', None)
    if isinstance(inner, nn.Module) and hasattr(model, 'data_preprocessor'):
        return inner, 'model.'
    return model, ''


class SiteCollector:
    """Wraps modules of ``model`` (names relative to the timm network) and records their sites in call order.

    Args:
        model: the model given to the adapter (wrapper or bare network); site names are relative to it.
        prefix: the timm network's name prefix inside ``model``.
    """

    def __init__(self, model: nn.Module, prefix: str):
        self.model = model
        self.prefix = prefix
        self.sites: list[QuantSite] = []

    def full(self, name: str) -> str:
        return f'{self.prefix}{name}'

    def layer(self, name: str, role: str, block: str = '', tags=()) -> QuantSite:
        """A Linear / Conv2d site whose input has ``role``."""
        full = self.full(name)
        module = wrap_linear_or_conv(self.model, full)
        kind = 'conv' if isinstance(module, QuantConv2d) else 'linear'
        site = QuantSite(full, kind, module, {'input': role, 'weight': Role.WEIGHT}, self.full(block) if block
                         else '', tags)
        self.sites.append(site)
        return site

    def matmul(self, name: str, module: QuantMatMul, a: str, b: str, block: str = '', tags=(),
               layouts: dict[str, Layout] | None = None) -> QuantSite:
        """A matmul site; ``layouts`` of its operands default to q@kᵀ's when ``b`` is the key, else attn@v's."""
        if layouts is None:
            layouts = QK_LAYOUTS if b == Role.K else AV_LAYOUTS
        site = QuantSite(self.full(name), 'matmul', module, {'a': a, 'b': b}, self.full(block) if block else '',
                         tags, layouts)
        self.sites.append(site)
        return site

    def act(self, name: str, module: QuantAct, role: str, block: str = '', tags=(),
            layout: Layout | None = None) -> QuantSite:
        site = QuantSite(self.full(name), 'act', module, {'input': role}, self.full(block) if block else '', tags,
                         {'input': layout} if layout is not None else {})
        self.sites.append(site)
        return site

    def attention(self, name: str, attn: nn.Module, tags=()) -> None:
        """The q@kᵀ, softmax and attn@v sites of a class-swapped attention module at ``name``."""
        self.matmul(f'{name}.qk_matmul', attn.qk_matmul, Role.Q, Role.K, name, tags)
        self.act(f'{name}.attn_softmax', attn.attn_softmax, Role.ATTN_LOGITS, name, tags, HEADS)
        self.matmul(f'{name}.av_matmul', attn.av_matmul, Role.POST_SOFTMAX, Role.V, name, tags)

    def generic(self, root: str, block: str = '', tags=(), skip=()) -> list[QuantSite]:
        """Every Linear / Conv2d under ``root`` (not under a name in ``skip``) as a generic site."""
        net = self.model.get_submodule(self.prefix.rstrip('.')) if self.prefix else self.model
        base = net.get_submodule(root) if root else net
        added = []
        for n, m in base.named_modules():
            name = f'{root}.{n}' if root and n else (root or n)
            if any(name == s or name.startswith(f'{s}.') for s in skip):
                continue
            if isinstance(m, (QuantLinear, QuantConv2d)) or is_plain_linear(m) or is_plain_conv2d(m):
                added.append(self.layer(name, Role.GENERIC, block or root, tags))
        return added

    def set_norm(self, site_name: str, norm_name: str, pad_owner: str = '') -> None:
        """Record that the normalisation ``norm_name`` feeds the input of the site ``site_name``, padded by the
        block ``pad_owner`` if given (names relative to the timm network)."""
        full = self.full(site_name)
        site = next(s for s in self.sites if s.name == full)
        pad = self.full(pad_owner) if pad_owner else ''
        site.norm = NormInfo(self.full(norm_name), self.model.get_submodule(self.full(norm_name)), pad,
                             self.model.get_submodule(pad) if pad else None)

    def unclaimed(self) -> list[str]:
        """Linear / Conv2d modules of the network that no site covers (names relative to the network)."""
        net = self.model.get_submodule(self.prefix.rstrip('.')) if self.prefix else self.model
        claimed = {s.name for s in self.sites}
        return [n for n, m in net.named_modules()
                if (is_plain_linear(m) or is_plain_conv2d(m) or isinstance(m, (QuantLinear, QuantConv2d)))
                and self.full(n) not in claimed]


class TimmAdapter(ModelAdapter):
    """Base of the timm adapters: the calibration forward runs the whole classifier.

    Args:
        kinds: site kinds to wrap.
        strict: raise if a Linear / Conv2d of the network is not covered by a site of a known role; with
            ``False`` such layers become generic sites (tagged ``other``).
    """

    def __init__(self, kinds=KINDS, strict: bool = False):
        super().__init__(kinds)
        self.strict = strict

    def finish(self, collector: SiteCollector) -> list[QuantSite]:
        """Cover the layers no family-specific rule claimed (e.g. an attention-pool head) as generic sites."""
        left = collector.unclaimed()
        if left and self.strict:
            raise ValueError(f'{type(self).__name__}: layers {left[:10]} have no known role (strict=True)')
        for name in left:
            collector.layer(name, Role.GENERIC, name, {'other'})
        return collector.sites

    @torch.no_grad()
    def calibration_forward(self, model: nn.Module, data_batch) -> None:
        """A batch from the model's data loader (preprocessed by its data preprocessor), or an image tensor."""
        if isinstance(data_batch, torch.Tensor):
            model(data_batch)
            return
        preprocessor = getattr(model, 'data_preprocessor', None)
        if preprocessor is None:
            raise TypeError(f'{type(self).__name__}: a {type(data_batch).__name__} batch needs a model with a data '
                            'preprocessor (TimmClassifier); give a bare timm model image tensors')
        inputs = preprocessor(data_batch, False)['inputs']
        model(inputs, mode='tensor')


class QuantTimmAttention(ClassSwapMixin, Attention):
    """timm's ``Attention`` with q@kᵀ and attn@v as :class:`QuantMatMul` sites and the softmax as a
    :class:`QuantSoftmax` site.

    With a quantizer of these sites active (enabled or observing) it runs timm's explicit path with the two
    products and the softmax as sites: ``q`` is scaled before q@kᵀ (the ``q`` role sees ``q·d^-1/2``), the logits
    enter the softmax site, and the softmax output is attn@v's left operand. Otherwise it is timm's own forward, fused kernel included where the module enables it
    (``fused_attn``), so a model with quantization off computes bit for bit what the float model computes.
    """

    qk_matmul: QuantMatMul
    attn_softmax: QuantSoftmax
    av_matmul: QuantMatMul
    #: run the explicit path even with quantization off (reconstruction records float attention maps)
    force_explicit: bool = False

    def matmuls_active(self) -> bool:
        """Whether a quantizer of the matmul or softmax sites is installed and enabled (or observing), or the
        explicit path is forced."""
        quantizers = (self.qk_matmul.a_quantizer, self.qk_matmul.b_quantizer, self.av_matmul.a_quantizer,
                      self.av_matmul.b_quantizer, self.attn_softmax.quantizer)
        return self.force_explicit or any(q is not None and (q.enabled or q.observing) for q in quantizers)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if not self.matmuls_active():
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, C = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = self.qk_matmul(q, k.transpose(-2, -1))
        attn_bias = resolve_self_attn_mask(N, attn, attn_mask, is_causal)
        attn = maybe_add_mask(attn, attn_bias)
        attn = self.attn_softmax(attn)
        attn = self.attn_drop(attn)
        x = self.av_matmul(attn, v)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


def attention_sites(col: SiteCollector, name: str, attn: nn.Module, tags=()) -> None:
    """Sites of a timm ``Attention`` at ``name``: qkv (and gate) post-LN, q@kᵀ, softmax logits, attn@v, proj."""
    attn = QuantTimmAttention.convert(attn, col.full(name))
    col.layer(f'{name}.qkv', Role.POST_LN, name, tags)
    if attn.gate is not None:
        col.layer(f'{name}.gate', Role.POST_LN, name, tags)
    col.attention(name, attn, tags)
    proj_role = Role.ATTN_OUT if isinstance(attn.norm, nn.Identity) else Role.POST_LN
    col.layer(f'{name}.proj', proj_role, name, tags)


def mlp_sites(col: SiteCollector, name: str, mlp: nn.Module, tags=()) -> None:
    """Sites of a timm ``Mlp`` / ``ConvMlp``: fc1 (post-LN input), fc2 (post-activation input)."""
    for attr in ('fc1', 'fc2'):
        if not hasattr(mlp, attr):
            raise TypeError(f'{col.full(name)}: expected a timm Mlp with fc1 / fc2, got {type(mlp).__name__}')
    col.layer(f'{name}.fc1', Role.POST_LN, name, tags)
    norm = getattr(mlp, 'norm', None)
    fc2_role = Role.POST_GELU if norm is None or isinstance(norm, nn.Identity) else Role.POST_LN
    col.layer(f'{name}.fc2', fc2_role, name, tags)


def transformer_block_sites(col: SiteCollector, name: str, block: nn.Module, tags=(),
                            pad_owner: str = '') -> None:
    """Sites of a timm pre-norm transformer ``Block`` (norm1 → attn, norm2 → mlp), with the norms recorded as
    the inputs of qkv (and gate) and fc1; the module ``pad_owner`` (a name) pads the ``norm1`` output before the
    attention."""
    for attr in ('attn', 'mlp', 'norm1', 'norm2'):
        if not hasattr(block, attr):
            raise TypeError(f'{col.full(name)}: expected a timm transformer Block with {attr}, got '
                            f'{type(block).__name__}')
    attention_sites(col, f'{name}.attn', block.attn, tags)
    mlp_sites(col, f'{name}.mlp', block.mlp, tags)
    col.set_norm(f'{name}.attn.qkv', f'{name}.norm1', pad_owner)
    if getattr(block.attn, 'gate', None) is not None:
        col.set_norm(f'{name}.attn.gate', f'{name}.norm1', pad_owner)
    col.set_norm(f'{name}.mlp.fc1', f'{name}.norm2')
