"""Exceptions and argument checks shared by all quantizers."""
from __future__ import annotations

import torch

MIN_BITS = 2
MAX_BITS = 16


class QuantizerError(ValueError):
    """A quantizer was configured or used with invalid input."""


class EmptyCalibrationError(QuantizerError):
    """A quantizer was frozen without having observed any data."""


class NonFiniteInputError(QuantizerError):
    """A quantizer received NaN or inf values."""


def check_bits(bits, field: str = 'bits') -> int:
    """Return ``bits`` as an int, or raise if it is not an integer in [MIN_BITS, MAX_BITS]."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise QuantizerError(f'{field}={bits!r} is invalid: allowed values are integers {MIN_BITS}..{MAX_BITS}')
    return bits


def check_choice(value, field: str, allowed) -> str:
    if value not in allowed:
        raise QuantizerError(f'{field}={value!r} is invalid: allowed values are {sorted(allowed)}')
    return value


def check_percentiles(percentiles) -> tuple[float, ...]:
    """Percentile candidates as floats, each in (0.5, 1] (the upper level; ``1 - p`` is the lower one)."""
    values = tuple(float(p) for p in percentiles)
    if not values or not all(0.5 < p <= 1.0 for p in values):
        raise QuantizerError(f'percentiles={percentiles!r} is invalid: allowed values are in (0.5, 1]')
    return values


def check_finite(x: torch.Tensor, where: str) -> tuple[float, float] | None:
    """Raise :class:`NonFiniteInputError` if ``x`` holds NaN or inf (one reduction: min and max propagate both);
    returns ``(min, max)`` of ``x`` (None for an empty or non-float tensor)."""
    if not x.is_floating_point() or x.numel() == 0:
        return None
    lo, hi = torch.aminmax(x.detach())
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        return float(lo), float(hi)
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    raise NonFiniteInputError(
        f'{where}: input holds {n_nan} NaN and {n_inf} inf values out of {x.numel()}; '
        'quantization needs finite activations (check the model weights and the input data)')
