"""A plain name -> class table for quantizers (timm style), so this layer imports no mm* package."""
from __future__ import annotations

import fnmatch

from .errors import QuantizerError

_QUANTIZERS: dict[str, type] = {}


def register_quantizer(name: str):
    """Class decorator: ``@register_quantizer('uniform')``."""

    def wrap(cls):
        if name in _QUANTIZERS and _QUANTIZERS[name] is not cls:
            raise QuantizerError(f'quantizer name {name!r} is already registered by {_QUANTIZERS[name].__name__}')
        _QUANTIZERS[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def list_quantizers(pattern: str = '*') -> list[str]:
    """Registered quantizer names matching a shell-style pattern, e.g. ``list_quantizers('log*')``."""
    return sorted(n for n in _QUANTIZERS if fnmatch.fnmatch(n, pattern))


def get_quantizer_class(name: str) -> type:
    if name not in _QUANTIZERS:
        raise QuantizerError(f'unknown quantizer type={name!r}: allowed values are {list_quantizers()}')
    return _QUANTIZERS[name]


def build_quantizer(cfg):
    """Build a quantizer from ``dict(type=name, **kwargs)``; ``None`` stays ``None``; instances pass through."""
    from .base import Quantizer
    if cfg is None or isinstance(cfg, Quantizer):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise QuantizerError(f'a quantizer config must be a dict with a "type" key, got {cfg!r}')
    kwargs = dict(cfg)
    cls = get_quantizer_class(kwargs.pop('type'))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise QuantizerError(f'quantizer {cls.registry_name!r}: bad arguments {sorted(kwargs)}: {e}') from None
