"""Creating timm models by name and loading their weights from local files only (never a download)."""
from __future__ import annotations

import difflib
import os
import sys
from urllib.parse import urlparse

from torch import nn

from ..utils.checkpoint import CheckpointError, extract_state_dict, load_state_dict_strict, load_torch_file

#: weight files a timm repository on the Hugging Face hub holds, in the order timm prefers them
HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin', 'open_clip_model.safetensors',
                   'open_clip_pytorch_model.bin')


def create_timm_model(model_name: str, num_classes: int | None = None, model_kwargs: dict | None = None) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, ...)`` with clear errors for a bad name or argument.

    Args:
        model_name: a timm model name (``timm.list_models()``), e.g. ``vit_small_patch16_224``.
        num_classes: classifier classes; ``0`` removes the head (features out); ``None`` keeps timm's default.
        model_kwargs: further keyword arguments of the timm model (``img_size``, ``depth``, ``dynamic_img_size``...).

    Returns:
        The timm model with randomly initialised weights.

    Raises:
        ValueError: the name is not a timm model.
        TypeError: ``model_kwargs`` holds an argument the model does not take.
    """
    import timm

    if not isinstance(model_name, str) or not timm.is_model(model_name):
        close = difflib.get_close_matches(str(model_name), timm.list_models(), n=5, cutoff=0.6)
        hint = f'; close matches: {close}' if close else ''
        raise ValueError(f'model_name={model_name!r} is not a timm model: allowed values are the names of '
                         f"timm.list_models() (e.g. timm.list_models('vit_*')){hint}")
    kwargs = dict(model_kwargs or {})
    for key in ('pretrained', 'num_classes', 'pretrained_cfg_overlay', 'checkpoint_path'):
        if key in kwargs:
            raise ValueError(f'model_kwargs.{key} is not allowed: set it as the model argument instead '
                             '(weights come from `checkpoint` or `pretrained`, classes from `num_classes`)')
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes={num_classes!r} is invalid: allowed values are integers >= 0 '
                             '(0 removes the classifier head)')
        kwargs['num_classes'] = num_classes
    try:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    except TypeError as e:
        raise TypeError(f'model_kwargs={model_kwargs!r} are invalid for timm model {model_name!r}: {e}') from e


def disable_fused_attention(model: nn.Module) -> int:
    """Switch every timm attention module to its explicit q@kᵀ / softmax / attn@v path; returns how many."""
    n = 0
    for m in model.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = False
            n += 1
    return n


def timm_checkpoint_filter(model: nn.Module):
    """The ``checkpoint_filter_fn(state_dict, model)`` of the model's timm module (it converts the original
    release formats, e.g. Swin's or DeiT's, and resamples position embeddings), or ``None``."""
    fn = getattr(sys.modules.get(type(model).__module__), 'checkpoint_filter_fn', None)
    return fn if callable(fn) else None


def load_timm_weights(model: nn.Module, path: str, model_name: str = '') -> None:
    """Load a ``.pth`` / ``.safetensors`` file into a timm model, requiring every key and shape to match.

    A checkpoint saved from :class:`~quant_hooks.models.TimmClassifier` (keys prefixed ``model.``) loads too. If
    the keys do not match as they are, the model's own timm converter (``checkpoint_filter_fn``) is tried once;
    when that does not produce a matching state either, the error of the unconverted state is raised.

    Raises:
        CheckpointError: the file is missing or unreadable, or it holds weights of another architecture.
    """
    state = extract_state_dict(load_torch_file(path))
    if state and all(k.startswith('model.') for k in state):
        state = {k[len('model.'):]: v for k, v in state.items()}
    source = f'checkpoint {path} (for timm model {model_name!r})' if model_name else f'checkpoint {path}'
    try:
        load_state_dict_strict(model, state, source=source)
    except CheckpointError as strict_error:
        convert = timm_checkpoint_filter(model)
        if convert is None:
            raise
        try:
            converted = convert(dict(state), model)
            load_state_dict_strict(model, converted, source=source)
        except Exception:  # the converter rejects states of other architectures in its own ways
            raise strict_error from None
    # models that cache attention biases (EfficientFormer) drop the cache on train()/eval()
    model.train(model.training)


def cached_pretrained_candidates(pretrained_cfg: dict, hf_cache_dir: str | None = None) -> list[str]:
    """Where timm's pretrained weights for ``pretrained_cfg`` would be in the local caches (HF hub, torch hub)."""
    import torch

    paths = []
    if pretrained_cfg.get('file'):
        paths.append(pretrained_cfg['file'])
    hf_id = pretrained_cfg.get('hf_hub_id')
    if hf_id:
        from huggingface_hub import constants, try_to_load_from_cache
        repo, _, revision = hf_id.partition('@')
        for filename in HF_WEIGHT_FILES:
            found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir, revision=revision or None)
            if isinstance(found, str):
                paths.append(found)
            else:
                cache = hf_cache_dir or constants.HF_HUB_CACHE
                paths.append(os.path.join(cache, f'models--{repo.replace("/", "--")}', 'snapshots', '*', filename))
    url = pretrained_cfg.get('url')
    if url:
        paths.append(os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urlparse(url).path)))
    return paths


def find_cached_pretrained(model_name: str, pretrained_cfg: dict, hf_cache_dir: str | None = None) -> str:
    """The local file of timm's pretrained weights for a model; weights are never downloaded here.

    Raises:
        CheckpointError: no cached file exists; the message lists where it was looked for.
    """
    candidates = cached_pretrained_candidates(pretrained_cfg, hf_cache_dir)
    for path in candidates:
        if '*' not in path and os.path.isfile(path) and not path.endswith('.npz'):
            return path
    looked = '\n  '.join(candidates) or '(the pretrained config names no hub id, url or file)'
    raise CheckpointError(
        f'pretrained=True: no cached weights for timm model {model_name!r} '
        f'(tag {pretrained_cfg.get("tag")!r}); looked at:\n  {looked}\n'
        'Weights are never downloaded at run time. Either fill the cache beforehand on a machine with internet '
        f"(python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\") or pass "
        'checkpoint=PATH to a .pth / .safetensors file.')
