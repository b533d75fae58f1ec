"""Trained detector weights without their pre-trained, frozen parts.

A detector whose backbone loads its own pre-trained weights at construction (``ViTDetBackbone(pretrained=...,
frozen=True)`` sets ``weights_source``) is saved without that backbone: the file holds only the trained neck and
heads (half precision by default) and names the left-out submodules in its safetensors metadata
(``pretrained_submodules``). Loading requires every other key and shape to match, and each left-out submodule to
have loaded its own weights; tensors are cast back to the model's dtype (float32).
"""
from __future__ import annotations

import json
import os

from torch import nn

from .checkpoint import CheckpointError

META_KEY = 'pretrained_submodules'


def pretrained_submodules(model: nn.Module) -> list[str]:
    """Names of the direct children that loaded their own pre-trained weights and are frozen (no trainable
    parameter)."""
    return [name for name, child in model.named_children()
            if getattr(child, 'weights_source', None) is not None
            and not any(p.requires_grad for p in child.parameters())]


def export_trained_weights(model: nn.Module, path: str, half: bool = True, meta: dict | None = None) -> list[str]:
    """Save the model's state without its frozen pre-trained children to a ``.safetensors`` file.

    Args:
        model: the trained detector (an mmengine model wrapper is unwrapped).
        path: output ``.safetensors`` file (its folder is created).
        half: store floating-point tensors as float16.
        meta: extra string-convertible metadata (config, seed ...), stored as JSON strings.

    Returns:
        The names of the left-out children.
    """
    from safetensors.torch import save_file

    model = getattr(model, 'module', model)
    skip = pretrained_submodules(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()
             if not any(k.startswith(s + '.') for s in skip)}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.contiguous() for k, v in state.items()}
    metadata = {META_KEY: ','.join(skip)}
    metadata.update({k: json.dumps(v) for k, v in (meta or {}).items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(state, path, metadata=metadata)
    return skip


def read_metadata(path: str) -> dict:
    """The safetensors metadata of ``path`` (empty for other files)."""
    if not path.endswith('.safetensors'):
        return {}
    from safetensors import safe_open
    try:
        with safe_open(path, framework='pt') as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f'checkpoint {path} is corrupt or not a safetensors file: {e}') from e


def is_partial_checkpoint(path: str) -> bool:
    """Whether ``path`` is a file written by :func:`export_trained_weights`."""
    return META_KEY in read_metadata(path)


def load_detector_weights(model: nn.Module, path: str) -> dict:
    """Load a file of :func:`export_trained_weights` into a detector whose left-out parts loaded their own weights.

    Raises:
        CheckpointError: a left-out submodule is missing or has no pre-trained weights, or the other keys / shapes
            do not match (every mismatch is listed).

    Returns:
        The file's metadata (JSON values decoded).
    """
    from safetensors.torch import load_file

    from .checkpoint import load_state_dict_strict, load_torch_file

    model = getattr(model, 'module', model)
    metadata = read_metadata(path)
    if META_KEY not in metadata:
        raise CheckpointError(f'checkpoint {path} has no {META_KEY!r} metadata: it was not written by '
                              'export_trained_weights (load it as a full checkpoint instead)')
    skip = [s for s in metadata[META_KEY].split(',') if s]
    for name in skip:
        child = getattr(model, name, None)
        if child is None:
            raise CheckpointError(f'checkpoint {path} leaves out {name!r}, which the model {type(model).__name__} '
                                  'does not have')
        if getattr(child, 'weights_source', None) is None:
            raise CheckpointError(f'checkpoint {path} leaves out {name!r}, which must load its own pre-trained '
                                  f'weights, but model.{name} has none (set its `pretrained` in the config)')
    state = load_file(path) if os.path.isfile(path) else load_torch_file(path)
    load_state_dict_strict(model, state, source=f'checkpoint {path}', skip=skip)
    return {k: json.loads(v) for k, v in metadata.items() if k != META_KEY}
