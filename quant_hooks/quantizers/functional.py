"""Stateless, vectorized building blocks shared by the quantizers."""
from __future__ import annotations

import torch

from .base import round_ste

#: smallest scale, so a constant tensor does not divide by zero
MIN_SCALE = 1e-8


def uniform_qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range: ``[0, 2^b - 1]`` (asymmetric) or ``[-2^(b-1), 2^(b-1) - 1]`` (symmetric)."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def affine_params(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool):
    """Scale and zero-point from a range.

    Asymmetric: ``Δ = (hi - lo) / (2^b - 1)``, ``z = round(-lo / Δ)``.
    Symmetric: ``Δ = max(|lo|, |hi|) / (2^(b-1) - 1)``, ``z = 0``.
    """
    if symmetric:
        scale = torch.maximum(lo.abs(), hi.abs()) / (2 ** (bits - 1) - 1)
        scale = scale.clamp_min(MIN_SCALE)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (2**bits - 1)).clamp_min(MIN_SCALE)
    return scale, torch.round(-lo / scale)


def fake_quant_affine(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                      qmax: int) -> torch.Tensor:
    """``(clamp(round(x / Δ) + z, qmin, qmax) - z) · Δ``; straight-through gradient when autograd needs it."""
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
        return (q - zero_point) * scale
    # clamp(q + z, qmin, qmax) - z == clamp(q, qmin - z, qmax - z) exactly (integers in float): 4 passes, not 6
    q = x / scale
    return q.round_().clamp_(qmin - zero_point, qmax - zero_point).mul_(scale)


def quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / Δ) + z, qmin, qmax)`` (as a float tensor)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def group_quantile(xg: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of a ``[G, S]`` tensor with linear interpolation (as ``torch.quantile``).

    Uses ``topk`` on the nearer tail, so it works for any S (``torch.quantile`` refuses more than 16M elements)
    and costs O(S) rather than a full sort.
    """
    n = xg.shape[1]
    pos = q * (n - 1)
    lo_rank = int(pos)  # floor, pos >= 0
    hi_rank = min(lo_rank + 1, n - 1)
    frac = pos - lo_rank
    if lo_rank >= (n - 1) / 2:  # upper tail: topk(largest)[j] is the (n-1-j)-th order statistic
        top = torch.topk(xg, n - lo_rank, dim=1, largest=True, sorted=True).values
        v_lo = top[:, n - 1 - lo_rank]
        v_hi = top[:, n - 1 - hi_rank]
    else:  # lower tail: topk(smallest)[j] is the j-th order statistic
        bottom = torch.topk(xg, hi_rank + 1, dim=1, largest=False, sorted=True).values
        v_lo, v_hi = bottom[:, lo_rank], bottom[:, hi_rank]
    return torch.lerp(v_lo, v_hi, torch.full_like(v_lo, frac))


def strided_columns(xg: torch.Tensor, max_cols: int) -> torch.Tensor:
    """A deterministic, evenly strided subset of at most ``max_cols`` columns of a ``[G, S]`` tensor."""
    n = xg.shape[1]
    if n <= max_cols:
        return xg
    idx = torch.linspace(0, n - 1, max_cols, device=xg.device).round_().long()
    return xg.index_select(1, idx)


def lp_error(x: torch.Tensor, xq: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-row mean ``|x - x̂|^p`` of ``[G, S]`` tensors."""
    return (x - xq).abs_().pow_(p).mean(dim=1)
