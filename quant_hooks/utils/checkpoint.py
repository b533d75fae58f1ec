"""Loading checkpoints safely (``weights_only=True``) with clear errors."""
from __future__ import annotations

import os
import pickle
import zipfile

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model."""


_SAFE_GLOBALS_DONE = False
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name: str):
    """The only ``getattr`` a checkpoint may call: mmengine pickles each ``HistoryBuffer``'s statistics methods
    as ``getattr(HistoryBuffer, 'min')`` and so on. Anything else is refused (a general ``getattr`` would make
    ``weights_only`` loading unsafe)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}), which weights_only loading '
                                 'does not allow')


def allow_checkpoint_globals() -> None:
    """Allow the few non-tensor types that mmengine checkpoints store (numpy scalars / dtypes in ``meta`` and
    ``message_hub``; mmengine's ``HistoryBuffer`` with its statistics methods) under
    ``torch.load(weights_only=True)``. Safe loading stays on: no general ``getattr`` or code object is allowed."""
    global _SAFE_GLOBALS_DONE
    if _SAFE_GLOBALS_DONE:
        return
    import numpy as np
    safe = [np.dtype, np.ndarray, np._core.multiarray.scalar, np._core.multiarray._reconstruct,
            (_history_buffer_getattr, '__builtin__.getattr'), (_history_buffer_getattr, 'builtins.getattr')]
    safe += [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8',
                                         'bool')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        safe.append(HistoryBuffer)
    except ImportError:
        pass
    # checkpoints pickled under numpy 1.x name these modules ``numpy.core.*``
    aliases = [(np._core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
               (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct')]
    torch.serialization.add_safe_globals(safe + aliases)
    _SAFE_GLOBALS_DONE = True


def load_torch_file(path: str, map_location='cpu'):
    """``torch.load`` with ``weights_only=True``; ``.safetensors`` files are read with safetensors."""
    if not path or not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            return load_file(path, device=str(map_location))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f'checkpoint {path} is corrupt or not a safetensors file: {e}') from e
    allow_checkpoint_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f'checkpoint {path} holds objects that are not allowed under weights_only=True '
                              f'loading, or is corrupt: {e}') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f'checkpoint {path} is corrupt or not a PyTorch checkpoint: {e}') from e


def extract_state_dict(ckpt) -> dict:
    """The model weights inside a checkpoint (``state_dict``, ``model`` or the dict itself), ``module.`` stripped."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint holds a {type(ckpt).__name__}, expected a dict of tensors')
    for key in ('state_dict', 'model', 'module'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    state = {k[7:] if k.startswith('module.') else k: v for k, v in ckpt.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'checkpoint entries are not tensors: {bad[:5]}')
    return state


def load_state_dict_strict(model: nn.Module, state: dict, source: str = 'checkpoint', skip=()) -> None:
    """Load ``state`` into ``model`` requiring the same keys and shapes; report every mismatch.

    ``skip``: names of submodules whose tensors ``state`` leaves out (they load their own weights); their keys are
    neither required nor loaded.
    """
    skip = list(skip)
    own = {k: v for k, v in model.state_dict().items() if not any(k.startswith(s + '.') for s in skip)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        without = f' (without {skip})' if skip else ''
        lines = [f'{source} does not match the model {type(model).__name__}{without}:']
        for title, items in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches',
                                                                                          shapes)):
            if items:
                more = f' ... and {len(items) - 10} more' if len(items) > 10 else ''
                lines.append(f'  {len(items)} {title}: {", ".join(items[:10])}{more}')
        raise CheckpointError('\n'.join(lines))
    model.load_state_dict(state, strict=not skip)


def load_checkpoint(model: nn.Module, path: str) -> dict:
    """Load model weights from ``path`` strictly; returns the checkpoint's ``meta`` (or {}).

    A file of trained weights without the model's frozen pre-trained parts
    (:func:`~quant_hooks.utils.detector_weights.export_trained_weights`) is loaded by
    :func:`~quant_hooks.utils.detector_weights.load_detector_weights`, equally strict on the parts it holds.
    """
    from .detector_weights import is_partial_checkpoint, load_detector_weights
    if os.path.isfile(path) and is_partial_checkpoint(path):
        return load_detector_weights(model, path)
    ckpt = load_torch_file(path)
    load_state_dict_strict(model, extract_state_dict(ckpt), source=f'checkpoint {path}')
    return ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
