"""Quantized building blocks: Linear / Conv2d with an input and a weight quantizer, a two-input matmul, and a
standalone activation quantizer.

Each block keeps the parameters of the float layer it replaces under the same names (``weight``, ``bias``),
so checkpoints load unchanged; quantizers are optional submodules, and a block with no quantizer (or with
quantization disabled) computes exactly what the float layer computes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quantizers import Quantizer, build_quantizer


def _named(quantizer, site: str):
    q = build_quantizer(quantizer)
    if q is not None:
        q.site = site
    return q


class _WeightCache:
    """Caches the fake-quantized weight while the weight and the quantizer are unchanged (eval only).

    The key covers the weight's storage and in-place version, the quantizer's ``version`` and ``enabled`` flag,
    and the in-place versions of the quantizer's own tensors (so an optimiser step on learnable rounding
    variables, or an in-place edit of a scale, invalidates it). Nothing is cached while gradients can flow
    into the weight or into the quantizer's parameters.
    """

    def __init__(self):
        self.key = None
        self.value = None

    def get(self, weight: torch.Tensor, quantizer: Quantizer, training: bool) -> torch.Tensor:
        grad = torch.is_grad_enabled() and (weight.requires_grad or any(p.requires_grad
                                                                        for p in quantizer.parameters()))
        if training or grad or quantizer.observing:
            self.key = self.value = None
            return quantizer(weight)
        tensors = tuple((t.data_ptr(), t._version) for t in (*quantizer.parameters(), *quantizer.buffers()))
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, id(quantizer), quantizer.version,
               quantizer.enabled, tensors)
        if key != self.key:
            self.value = quantizer(weight)
            self.key = key
        return self.value


class QuantWeightLayer:
    """Mixin for layers with ``weight``, ``input_quantizer`` and ``weight_quantizer``."""

    input_quantizer: Quantizer | None
    weight_quantizer: Quantizer | None

    def _init_quant(self, site: str, input_quantizer=None, weight_quantizer=None):
        self.site = site
        self.input_quantizer = _named(input_quantizer, f'{site}:input')
        self.weight_quantizer = _named(weight_quantizer, f'{site}:weight')
        self._wcache = _WeightCache()
        bind = getattr(self.input_quantizer, 'bind_layer', None)
        if bind is not None:  # e.g. NoisyQuant decides whether its noise removal folds into this layer's bias
            bind(self)

    def set_quantizers(self, input_quantizer=None, weight_quantizer=None):
        self._init_quant(self.site, input_quantizer, weight_quantizer)

    def quant_input(self, x):
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def quant_weight(self):
        if self.weight_quantizer is None:
            return self.weight
        return self._wcache.get(self.weight, self.weight_quantizer, self.training)

    def quant_bias(self, weight):
        """The bias, with any correction the input quantizer folds into it (e.g. NoisyQuant's ``-W·N``)."""
        fold = getattr(self.input_quantizer, 'fold_bias', None)
        if fold is None or not self.input_quantizer.enabled or self.input_quantizer.observing:
            return self.bias
        return fold(weight, self.bias, self)


class QuantLinear(QuantWeightLayer, nn.Linear):
    """``y = Q_w(W) · Q_x(x) + b``."""

    @classmethod
    def from_float(cls, linear: nn.Linear, site: str = '', input_quantizer=None, weight_quantizer=None):
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.in_features, m.out_features = linear.in_features, linear.out_features
        m.weight, m.bias = linear.weight, linear.bias
        m.train(linear.training)
        m._init_quant(site, input_quantizer, weight_quantizer)
        return m

    def forward(self, x):
        w = self.quant_weight()
        return F.linear(self.quant_input(x), w, self.quant_bias(w))


class QuantConv2d(QuantWeightLayer, nn.Conv2d):
    """Conv2d (any groups) with input and weight quantizers."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, site: str = '', input_quantizer=None, weight_quantizer=None):
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        for attr in ('in_channels', 'out_channels', 'kernel_size', 'stride', 'padding', 'dilation', 'transposed',
                     'output_padding', 'groups', 'padding_mode', '_reversed_padding_repeated_twice'):
            setattr(m, attr, getattr(conv, attr))
        m.weight, m.bias = conv.weight, conv.bias
        m.train(conv.training)
        m._init_quant(site, input_quantizer, weight_quantizer)
        return m

    def forward(self, x):
        w = self.quant_weight()
        return self._conv_forward(self.quant_input(x), w, self.quant_bias(w))


class QuantMatMul(nn.Module):
    """``Q_a(a) @ Q_b(b)`` for activation-activation products (q@kᵀ, attn@v)."""

    def __init__(self, site: str = '', a_quantizer=None, b_quantizer=None):
        super().__init__()
        self.site = site
        self.set_quantizers(a_quantizer, b_quantizer)

    def set_quantizers(self, a_quantizer=None, b_quantizer=None):
        self.a_quantizer = _named(a_quantizer, f'{self.site}:a')
        self.b_quantizer = _named(b_quantizer, f'{self.site}:b')

    def forward(self, a, b):
        if self.a_quantizer is not None:
            a = self.a_quantizer(a)
        if self.b_quantizer is not None:
            b = self.b_quantizer(b)
        return a @ b


class QuantAct(nn.Module):
    """A standalone activation quantizer (identity when it holds none)."""

    def __init__(self, site: str = '', quantizer=None):
        super().__init__()
        self.site = site
        self.set_quantizers(quantizer)

    def set_quantizers(self, quantizer=None):
        self.quantizer = _named(quantizer, f'{self.site}:input')

    def forward(self, x):
        return x if self.quantizer is None else self.quantizer(x)


class QuantSoftmax(QuantAct):
    """``softmax(x)`` along ``dim`` with a quantizer on its input, the attention logits.

    Without a quantizer it is exactly ``torch.softmax(x, dim)``. A quantizer that computes the softmax itself
    (``computes_softmax = True``, FQ-ViT's log-int-softmax) gets the logits and returns the probabilities; any other
    quantizer fake-quantizes the logits before the float softmax.

    Args:
        site: the site name, for messages.
        dim: the softmax axis.
        quantizer: the logits quantizer, or ``None``.
    """

    def __init__(self, site: str = '', dim: int = -1, quantizer=None):
        super().__init__(site, quantizer)
        self.dim = dim

    def forward(self, x):
        q = self.quantizer
        if q is None:
            return x.softmax(self.dim)
        if getattr(q, 'computes_softmax', False):
            return q(x)
        return q(x).softmax(self.dim)

    def extra_repr(self):
        return f'dim={self.dim}'
