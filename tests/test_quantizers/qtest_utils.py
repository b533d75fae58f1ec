"""Helpers shared by the quantizer tests (imported as ``qtest_utils``): calibration, test inputs, and one config
per registered quantizer."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from quant_hooks.quantizers import build_quantizer
from quant_hooks.quantizers import calibrate as calibrate_quantizer


def calibrate(q, *batches):
    """Observe ``batches`` (every pass the quantizer needs) and freeze; returns the quantizer."""
    return calibrate_quantizer(q, *batches)


def make_input(kind: str, seed: int = 0, shape=(2, 9, 24)) -> torch.Tensor:
    """Small test activations: ``ln`` (post-LayerNorm-like, with outlier channels), ``heavy`` (Student-t,
    heavy-tailed), ``gelu`` (GELU of heavy-tailed values), ``softmax`` (probabilities over the last axis),
    ``logits`` (attention logits), ``weight`` (a ``[16, 12]`` weight)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == 'weight':
        return torch.randn(16, 12, generator=gen) * 0.1
    x = torch.randn(shape, generator=gen)
    if kind == 'ln':
        x[..., :2] *= 12.0
        return x
    heavy = _student_t(shape, gen)
    if kind == 'heavy':
        return heavy
    if kind == 'gelu':
        return F.gelu(heavy * 1.5)
    if kind == 'softmax':
        return torch.softmax(heavy * 3.0, dim=-1)
    if kind == 'logits':
        return heavy * 3.0
    raise ValueError(kind)


def _student_t(shape, gen, dof: float = 2.0) -> torch.Tensor:
    """Student-t samples from a seeded generator: normal / sqrt(chi2 / dof)."""
    z = torch.randn(shape, generator=gen)
    chi2 = torch.randn((int(dof), *shape), generator=gen).square().sum(0)
    return z / torch.sqrt(chi2 / dof)


#: one config per registered quantizer (bits filled in by the tests) and the input kind it is meant for.
#: ``near_identity``: does 16 bits make the quantizer (almost) the identity? Log quantizers keep a relative
#: rounding error at any bit width, since more bits only extend their range downwards.
QUANTIZER_CASES = {
    'uniform': (dict(type='uniform'), 'ln', True),
    'log2': (dict(type='log2'), 'softmax', False),
    'log_sqrt2': (dict(type='log_sqrt2'), 'softmax', False),
    'ppoq': (dict(type='ppoq', threshold=4.0), 'ln', True),
    'shift_log2': (dict(type='shift_log2'), 'gelu', False),
    'twin_softmax': (dict(type='twin_softmax'), 'softmax', True),
    'twin_gelu': (dict(type='twin_gelu'), 'gelu', True),
    'ptf': (dict(type='ptf'), 'ln', True),
    'log_int_softmax': (dict(type='log_int_softmax'), 'logits', False),
    'noisy': (dict(type='noisy', quantizer=dict(type='uniform', bits=8)), 'ln', True),
    'qhyvit': (dict(type='qhyvit'), 'ln', True),
    'adaround': (dict(type='adaround'), 'weight', True),
}


def build_case(name: str, bits: int, **overrides):
    cfg, kind, _ = QUANTIZER_CASES[name]
    cfg = dict(cfg, bits=bits, **overrides)
    if name == 'noisy':
        cfg['quantizer'] = dict(cfg['quantizer'], bits=bits)
        cfg.pop('bits')
    return build_quantizer(cfg), kind


def target_of(name: str, x: torch.Tensor) -> torch.Tensor:
    """What the quantizer approximates: ``softmax(x)`` for log-int-softmax, ``x`` otherwise."""
    return torch.softmax(x, dim=-1) if name == 'log_int_softmax' else x
