"""Model adapters: they know where the quantization sites of a model family are, and nothing of methods."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..nn import QuantConv2d, QuantLinear, QuantMatMul, QuantSoftmax
from ..reconstruction.capture import StopForward, stop_forward_loop
from ..sites import QuantSite, Role

KINDS = ('linear', 'conv', 'matmul', 'act')


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition('.')
    return (model.get_submodule(parent_name) if parent_name else model), child


def is_plain_linear(module: nn.Module) -> bool:
    """nn.Linear or a subclass that keeps its computation (mmcv's empty-tensor-safe ``Linear``); not the
    ``NonDynamicallyQuantizableLinear`` of ``nn.MultiheadAttention``, whose forward is never called."""
    return isinstance(module, nn.Linear) and type(module).__name__ != 'NonDynamicallyQuantizableLinear' and \
        not isinstance(module, QuantLinear)


def is_plain_conv2d(module: nn.Module) -> bool:
    """nn.Conv2d or a subclass that keeps its computation (mmcv's empty-tensor-safe ``Conv2d``)."""
    return isinstance(module, nn.Conv2d) and not isinstance(module, QuantConv2d)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, child = get_submodule_parent(model, name)
    setattr(parent, child, new)


def wrap_linear_or_conv(model: nn.Module, name: str) -> nn.Module:
    """Swap ``model.<name>`` (an ``nn.Linear`` or ``nn.Conv2d``) for its quantized block, sharing parameters.

    Idempotent: an already wrapped block is returned as is.
    """
    module = model.get_submodule(name)
    if isinstance(module, (QuantLinear, QuantConv2d)):
        return module
    if is_plain_linear(module):
        new = QuantLinear.from_float(module, site=name)
    elif is_plain_conv2d(module):
        new = QuantConv2d.from_float(module, site=name)
    else:
        raise TypeError(f'{name}: cannot wrap {type(module).__module__}.{type(module).__name__}; expected '
                        'nn.Linear or nn.Conv2d (or a subclass that only adds empty-input handling)')
    replace_module(model, name, new)
    return new


class ClassSwapMixin:
    """Base of quantized variants of float modules that are made by swapping a module's class in place.

    Declared as ``class QuantX(ClassSwapMixin, X)`` with a forward that routes products through the added
    quantization blocks; :meth:`convert` turns an ``X`` into a ``QuantX`` keeping its parameters, buffers and
    state-dict keys, and adds ``added_modules`` (default: the ``qk_matmul`` and ``av_matmul`` sites of an
    attention module and its ``attn_softmax``, whose input is the attention logits), each named
    ``<module name>.<attribute>``.
    """

    added_modules: dict[str, type] = {'qk_matmul': QuantMatMul, 'attn_softmax': QuantSoftmax,
                                      'av_matmul': QuantMatMul}

    @classmethod
    def float_class(cls) -> type:
        return next(b for b in cls.__bases__ if not issubclass(b, ClassSwapMixin))

    @classmethod
    def convert(cls, module: nn.Module, name: str):
        """Swap ``module`` (exactly the float class, not a subclass whose forward may differ) to ``cls``."""
        if isinstance(module, cls):
            return module
        float_cls = cls.float_class()
        if type(module) is not float_cls:
            raise TypeError(f'{name}: expected {float_cls.__module__}.{float_cls.__qualname__}, got '
                            f'{type(module).__module__}.{type(module).__qualname__}')
        module.__class__ = cls
        for attr, block in cls.added_modules.items():
            setattr(module, attr, block(f'{name}.{attr}'))
        return module


class ModelAdapter:
    """Finds and wraps the quantization sites of one model family.

    Args:
        kinds: which site kinds to wrap (``linear``, ``conv``, ``matmul``, ``act``); default all.
    """

    def __init__(self, kinds: Iterable[str] = KINDS):
        kinds = tuple(kinds)
        bad = set(kinds) - set(KINDS)
        if bad:
            raise ValueError(f'adapter kinds={kinds!r} is invalid: allowed values are {KINDS}')
        self.kinds = kinds

    def prepare(self, model: nn.Module) -> list[QuantSite]:
        """Wrap the sites of ``model`` in place (idempotent) and return them in network order."""
        sites = [s for s in self._prepare(model) if s.kind in self.kinds]
        if not sites:
            raise ValueError(f'{type(self).__name__} found no quantization site of kinds {self.kinds} in '
                             f'{type(model).__name__}: is this the right adapter for the model?')
        return sites

    def _prepare(self, model: nn.Module) -> list[QuantSite]:
        raise NotImplementedError

    def calibration_forward(self, model: nn.Module, data_batch) -> None:
        """Run the part of ``model`` that reaches every site on one batch (no gradients)."""
        raise NotImplementedError

    # helpers for subclasses ------------------------------------------------------------------------------
    @staticmethod
    def generic_sites(model: nn.Module, prefix: str, skip: Iterable[str] = (), tags=()) -> list[QuantSite]:
        """Every nn.Linear / nn.Conv2d under ``prefix`` (except names starting with ``skip``) as a generic site."""
        skip = tuple(skip)
        root = model.get_submodule(prefix) if prefix else model
        names = [f'{prefix}.{n}' if prefix else n for n, m in root.named_modules()
                 if isinstance(m, (QuantLinear, QuantConv2d)) or is_plain_linear(m) or is_plain_conv2d(m)]
        sites = []
        for name in names:
            if skip and name.startswith(skip):
                continue
            module = wrap_linear_or_conv(model, name)
            kind = 'linear' if isinstance(module, QuantLinear) else 'conv'
            sites.append(QuantSite(name, kind, module, {'input': Role.GENERIC, 'weight': Role.WEIGHT}, tags=tags))
        return sites


@torch.no_grad()
def run_batches(adapter: ModelAdapter, model: nn.Module, batches: Iterable) -> int:
    """Calibration forward over ``batches``; returns how many batches ran. A capture hook may end a batch's forward
    early (:class:`~quant_hooks.reconstruction.StopForward`)."""
    n = 0
    with stop_forward_loop() as loop:
        for batch in batches:
            try:
                adapter.calibration_forward(model, batch)
            except StopForward:
                pass
            n += 1
            loop.index = n
    return n
