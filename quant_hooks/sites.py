"""Quantization sites: where in a model a quantizer sits, and the role of each tensor it quantizes.

Adapters find sites; methods assign quantizers to them by role. This module imports no model library.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from .layout import NCHW, TOKENS, WEIGHT, Layout


class Role:
    """What a quantized tensor is; methods choose quantizers by these names."""

    EMBED = 'embed'  # the image entering the patch embedding
    POST_LN = 'post_ln'  # output of a LayerNorm (qkv / fc1 / patch-merge inputs)
    POST_GELU = 'post_gelu'  # output of the MLP activation, the fc2 input (GELU; SiLU in MobileViT)
    POST_SOFTMAX = 'post_softmax'  # attention probabilities (attn@v left input)
    ATTN_LOGITS = 'attn_logits'  # the softmax input of an attention (FQ-ViT's log-int-softmax sits here)
    Q = 'q'
    K = 'k'
    V = 'v'
    ATTN_OUT = 'attn_out'  # attn@v output, the proj input
    GENERIC = 'generic'  # any other activation (conv stages, necks, heads)
    WEIGHT = 'weight'

    ALL = (EMBED, POST_LN, POST_GELU, POST_SOFTMAX, ATTN_LOGITS, Q, K, V, ATTN_OUT, GENERIC, WEIGHT)


#: site kinds and the quantizer slots each has
SLOTS = {
    'linear': ('input', 'weight'),
    'conv': ('input', 'weight'),
    'matmul': ('a', 'b'),
    'act': ('input', ),
}

#: slot layouts an adapter need not declare: linear inputs are tokens, conv inputs NCHW, weights [out, in, ...]
DEFAULT_LAYOUTS = {
    'linear': {'input': TOKENS, 'weight': WEIGHT},
    'conv': {'input': NCHW, 'weight': WEIGHT},
}


@dataclass
class NormInfo:
    """The normalisation layer whose output is a site's input (reparameterizations fold scales into it).

    Args:
        name: its module path in the model.
        module: the normalisation module (a LayerNorm for the transformer sites).
        pad_owner: the module path of the block that pads the normalised grid before the site (window attention);
            it has a ``pad_value`` buffer to set. Empty when nothing pads.
        pad_module: that block.
    """

    name: str
    module: nn.Module
    pad_owner: str = ''
    pad_module: nn.Module | None = None


@dataclass
class QuantSite:
    """One quantized block in a model.

    Args:
        name: the module path of the block in the model (``backbone.stages.0.blocks.0.attn.w_msa.qkv``).
        kind: ``linear``, ``conv``, ``matmul`` or ``act`` (see :data:`SLOTS`).
        module: the quantized block (``QuantLinear``, ``QuantConv2d``, ``QuantMatMul``, ``QuantAct``).
        roles: slot -> role, e.g. ``{'input': 'post_ln', 'weight': 'weight'}`` or ``{'a': 'q', 'b': 'k'}``.
        block: the enclosing module reconstructed as one unit (an attention or MLP module), if any.
        tags: extra labels: ``first`` / ``last`` layer, ``bridge`` (hybrid hand-over), ``backbone`` ...
        norm: the normalisation feeding the ``input`` slot, where the adapter knows it (:class:`NormInfo`).
        layouts: slot -> :class:`~quant_hooks.layout.Layout` of the slot's tensor. Linear and conv slots default to
            tokens / NCHW inputs and ``[out, in, ...]`` weights; the adapter declares matmul and act slots (a slot
            without a layout takes per-tensor granularity only).
    """

    name: str
    kind: str
    module: nn.Module
    roles: dict[str, str]
    block: str = ''
    tags: frozenset[str] = field(default_factory=frozenset)
    layouts: dict[str, Layout] = field(default_factory=dict)
    norm: NormInfo | None = None

    def __post_init__(self):
        if self.kind not in SLOTS:
            raise ValueError(f'site {self.name}: kind={self.kind!r} is invalid: allowed values are {sorted(SLOTS)}')
        bad = set(self.roles) - set(SLOTS[self.kind])
        if bad:
            raise ValueError(f'site {self.name}: slots {sorted(bad)} do not exist for kind {self.kind!r}: '
                             f'allowed slots are {SLOTS[self.kind]}')
        for slot, role in self.roles.items():
            if role not in Role.ALL:
                raise ValueError(f'site {self.name}: role {role!r} of slot {slot!r} is invalid: '
                                 f'allowed values are {Role.ALL}')
        self.tags = frozenset(self.tags)
        layouts = dict(DEFAULT_LAYOUTS.get(self.kind, {}))
        layouts.update(self.layouts)
        bad = set(layouts) - set(SLOTS[self.kind])
        if bad:
            raise ValueError(f'site {self.name}: layouts given for slots {sorted(bad)} that do not exist for kind '
                             f'{self.kind!r}: allowed slots are {SLOTS[self.kind]}')
        self.layouts = layouts

    def layout(self, slot: str) -> Layout | None:
        """The declared layout of ``slot`` (``None`` when the adapter declared none)."""
        return self.layouts.get(slot)

    def quantizers(self) -> dict:
        """slot -> the quantizer installed there (or None)."""
        attr = {'input': 'input_quantizer', 'weight': 'weight_quantizer', 'a': 'a_quantizer', 'b': 'b_quantizer'}
        if self.kind == 'act':
            attr['input'] = 'quantizer'
        return {slot: getattr(self.module, attr[slot], None) for slot in SLOTS[self.kind]}


def count_roles(sites: list[QuantSite]) -> dict[str, int]:
    """How many tensors of each role the sites quantize (one per slot)."""
    return dict(sorted(Counter(role for s in sites for role in s.roles.values()).items()))


def count_kinds(sites: list[QuantSite]) -> dict[str, int]:
    return dict(sorted(Counter(s.kind for s in sites).items()))
