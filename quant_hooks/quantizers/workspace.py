"""Reused CPU buffers for calibration scorers: they score one tensor at a time, so each named buffer is allocated
once for the largest tensor and reused, and dropped when a search is over."""
from __future__ import annotations

import torch

_WORKSPACE: dict = {}


def workspace(name: str, numel: int, dtype: torch.dtype, fill: float | None = None) -> torch.Tensor:
    """A reused CPU buffer ``name`` of ``numel`` values (uninitialised, or ``fill`` when it is first made: a caller
    that passes ``fill`` must not write to it)."""
    buf = _WORKSPACE.get(name)
    if buf is None or buf.numel() < numel or buf.dtype != dtype:
        buf = torch.empty(numel, dtype=dtype) if fill is None else torch.full((numel, ), fill, dtype=dtype)
        _WORKSPACE[name] = buf
    return buf[:numel]


def release_workspace() -> None:
    """Drop the reused buffers (a quantizer calls it once its search is over)."""
    _WORKSPACE.clear()
