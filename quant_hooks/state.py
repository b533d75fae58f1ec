"""Saving and reloading the calibrated state of the quantizers, and the model tensors a method changed.

Model weights are not saved, except the few a method rewrote while quantizing (RepQ-ViT folds scales into
LayerNorms and the next layers): those are stored under ``model`` and written back on loading.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .quantizers import Quantizer
from .utils.checkpoint import CheckpointError, load_torch_file


def quantizer_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state entries of every quantizer in ``model``."""
    prefixes = tuple(f'{n}.' for n, m in model.named_modules() if isinstance(m, Quantizer))
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def save_quantizer_state(model: nn.Module, path: str, meta: dict | None = None, model_keys=()) -> None:
    """Write the quantizers' state (and the model entries ``model_keys`` of ``model.state_dict()``) atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = model.state_dict()
    missing = [k for k in model_keys if k not in state]
    if missing:
        raise KeyError(f'model_keys {missing[:5]} are not in the model state dict')
    tmp = f'{path}.tmp'
    torch.save(dict(quantizers=quantizer_state_dict(model), model={k: state[k] for k in model_keys},
                    meta=meta or {}), tmp)
    os.replace(tmp, path)


def _write_model_tensor(model: nn.Module, key: str, value: torch.Tensor) -> None:
    """Copy ``value`` into the parameter or buffer ``key``; a buffer that is ``None`` until a method sets it
    (a ``pad_value``), or a bias a layer was built without, is created."""
    owner_name, _, attr = key.rpartition('.')
    owner = model.get_submodule(owner_name) if owner_name else model
    if attr in owner._parameters and owner._parameters[attr] is not None:
        owner._parameters[attr].data.copy_(value)
    elif attr not in owner._buffers and getattr(owner, attr, 0) is None:  # a bias added to a layer built without
        setattr(owner, attr, nn.Parameter(value.clone()))
    elif attr in owner._buffers:
        owner._buffers[attr] = value.clone()
    else:
        raise CheckpointError(f'model entry {key!r} of the quantizer state is neither a parameter nor a buffer of '
                              'the model')


def load_quantizer_state(model: nn.Module, path: str) -> dict:
    """Load a state saved by :func:`save_quantizer_state` into a model whose quantizers are installed.

    Raises:
        CheckpointError: the file is missing or corrupt, or its entries do not match the model's quantizers.
    """
    blob = load_torch_file(path)
    if not isinstance(blob, dict) or 'quantizers' not in blob:
        raise CheckpointError(f'{path} is not a quantizer state file (no "quantizers" entry)')
    stored = blob['quantizers']
    expected = quantizer_state_dict(model)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f'quantizer state {path} does not match the model (same method, adapter and bits '
                              f'are needed): {len(missing)} missing, e.g. {missing[:5]}; {len(unexpected)} '
                              f'unexpected, e.g. {unexpected[:5]}')
    model.load_state_dict(stored, strict=False)
    for key, value in blob.get('model', {}).items():
        _write_model_tensor(model, key, value)
    for m in model.modules():
        if isinstance(m, Quantizer):
            m.version += 1  # weights may have changed: drop cached quantized weights
    return blob.get('meta', {})


def broadcast_quantizer_state(model: nn.Module, src: int = 0) -> int:
    """Make every rank's quantizers equal rank ``src``'s (no-op outside a distributed run); returns the number of
    tensors sent."""
    from mmengine.dist import broadcast, get_world_size
    if get_world_size() == 1:
        return 0
    state = quantizer_state_dict(model)
    for tensor in state.values():
        broadcast(tensor, src)
    for m in model.modules():
        if isinstance(m, Quantizer):
            m.version += 1  # parameters changed in place: drop cached quantized weights
    return len(state)
