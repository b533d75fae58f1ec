"""Reconstruction losses: the output error, and extra terms computed from tensors tapped inside a unit.

An extra term is a :class:`LossTerm`: it names the tensors it needs (``taps``: a module of the unit and the index of
the forward argument to record) and turns the quantized unit's tapped values and the float unit's into a scalar.
Terms are built from config dicts by name (``dict(type='AttentionKL', temperature=4)``) through a plain table, so
this package imports no mm* library.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..sites import Role
from .cache import tensors_of

_TERMS: dict[str, type] = {}


def register_loss_term(name: str):
    """Class decorator adding a :class:`LossTerm` to the table read by :func:`build_loss_term`."""

    def wrap(cls):
        if name in _TERMS and _TERMS[name] is not cls:
            raise ValueError(f'loss term name {name!r} is already registered by {_TERMS[name].__name__}')
        _TERMS[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def build_loss_term(cfg) -> LossTerm:
    if isinstance(cfg, LossTerm):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'a reconstruction loss term must be a dict with a "type" key, got {cfg!r}')
    kwargs = dict(cfg)
    name = kwargs.pop('type')
    if name not in _TERMS:
        raise ValueError(f'reconstruction loss term type={name!r} is invalid: allowed values are {sorted(_TERMS)}')
    return _TERMS[name](**kwargs)


def output_mse(pred, target) -> torch.Tensor:
    """Squared error summed over the channel axis (dim 1 of 4-d NCHW maps, the last dim otherwise) and averaged
    over the rest (BRECQ / QDrop's reconstruction loss), summed over every tensor of a structured output."""
    total = None
    for p, t in zip(tensors_of(pred), tensors_of(target)):
        if not p.is_floating_point():
            continue
        err = (p - t).float().pow(2)
        err = err.sum(1) if err.dim() == 4 else err.sum(-1)
        term = err.mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError('the unit output holds no floating-point tensor to reconstruct')
    return total


@dataclass(frozen=True)
class Tap:
    """Record positional argument ``arg`` of ``module``'s forward (a forward pre-hook)."""

    module: nn.Module
    arg: int = 0


class LossTerm:
    """An extra reconstruction loss term.

    Args:
        weight: multiplies the term.
    """

    registry_name = 'term'

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def taps(self, sites: Sequence) -> list[Tap]:
        """The tensors this term needs in a unit with these sites (empty: the term does not apply)."""
        raise NotImplementedError

    def __call__(self, quant: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
        """The weighted term from the tapped tensors of the quantized unit and of the float unit."""
        raise NotImplementedError

    def describe(self) -> dict:
        return dict(type=self.registry_name, weight=self.weight)


@register_loss_term('AttentionKL')
class AttentionKL(LossTerm):
    """ADFQ-ViT's attention-score term: ``(1/λ)·T²·KL(softmax(A_fp/T) ‖ softmax(A_q/T))``.

    ``A`` are the attention probabilities entering attn@v (the ``a`` input of a matmul site whose ``a`` role is
    ``post_softmax``; ``act`` sites of that role too, e.g. MobileViT v2's context scores), recorded before their
    quantizer: the quantized unit's come from its quantized q / k path, the float unit's from the float model.
    The KL divergence is summed over ``dim`` and averaged over the other axes, then averaged over the unit's
    attention maps; ``T²`` keeps the gradient scale independent of the temperature (knowledge distillation's
    convention).

    Args:
        temperature: T (paper: 4).
        lam: λ; the term is weighted ``1/λ`` (paper: 0.1).
        dim: the softmax axis: ``-1`` the key axis (paper), ``1`` the head axis (authors' code).
    """

    def __init__(self, temperature: float = 4.0, lam: float = 0.1, dim: int = -1):
        if temperature <= 0 or lam <= 0:
            raise ValueError(f'AttentionKL temperature={temperature}, lam={lam} are invalid: both must be > 0')
        if dim not in (-1, 1):
            raise ValueError(f'AttentionKL dim={dim} is invalid: allowed values are [-1 (key axis), 1 (head axis)]')
        super().__init__(1.0 / lam)
        self.temperature = float(temperature)
        self.lam = float(lam)
        self.dim = int(dim)

    def taps(self, sites):
        taps = []
        for s in sites:
            if s.kind == 'matmul' and s.roles.get('a') == Role.POST_SOFTMAX:
                taps.append(Tap(s.module, 0))
            elif s.kind == 'act' and s.roles.get('input') == Role.POST_SOFTMAX:
                taps.append(Tap(s.module, 0))
        return taps

    def __call__(self, quant, target):
        t = self.temperature
        terms = []
        for q, f in zip(quant, target):
            log_q = F.log_softmax(q.float() / t, dim=self.dim)
            log_f = F.log_softmax(f.float() / t, dim=self.dim)
            kl = (log_f.exp() * (log_f - log_q)).sum(self.dim)
            terms.append(kl.mean())
        return self.weight * t * t * torch.stack(terms).mean()

    def describe(self):
        return dict(super().describe(), temperature=self.temperature, lam=self.lam, dim=self.dim)
