"""Stateless, vectorized building blocks shared by the quantizers."""
from __future__ import annotations

import math

import torch

from .base import round_ste
from .errors import QuantizerError

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


def fake_quant_affine(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int | torch.Tensor,
                      qmax: int | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``(clamp(round(x / Δ) + z, qmin, qmax) - z) · Δ``; straight-through gradient when autograd needs it.

    ``scale``, ``zero_point`` and (optionally) ``qmin`` / ``qmax`` broadcast against ``x`` (per-group code ranges
    are tensors). ``out``: a tensor of the result's shape to write it to (no autograd), so that a search over many
    candidates reuses one buffer.
    """
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        if out is not None:
            raise QuantizerError('fake_quant_affine(out=...) does not support autograd: call it without out')
        q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
        return (q - zero_point) * scale
    if not isinstance(zero_point, torch.Tensor):
        zero_point = torch.as_tensor(zero_point, dtype=x.dtype, device=x.device)
    # clamp(r + z, qmin, qmax) - z == clamp(r, qmin - z, qmax - z) exactly for integer-valued r and z: the bounds
    # are computed on the (small) parameter tensors.
    t = x / scale if out is None else torch.div(x, scale, out=out)
    return dequant_rounded_(t, scale, zero_point, qmin, qmax)


def dequant_rounded_(t: torch.Tensor, scale, zero_point, qmin, qmax) -> torch.Tensor:
    """``(clamp(round(t) + z, qmin, qmax) - z) · Δ`` in place on ``t = x / Δ`` (no autograd), i.e. the rest of
    :func:`fake_quant_affine` (``zero_point`` a tensor)."""
    return shifted_codes_(t, zero_point, qmin, qmax).mul_(scale)


def shifted_codes_(t: torch.Tensor, zero_point, qmin, qmax) -> torch.Tensor:
    """``clamp(round(t) + z, qmin, qmax) - z`` in place on ``t = x / Δ`` (no autograd). Two one-sided clamps: a
    two-sided clamp with tensor bounds takes a much slower kernel on CPU."""
    return t.round_().clamp_(min=qmin - zero_point).clamp_(max=qmax - zero_point)


def quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / Δ) + z, qmin, qmax)`` (as a float tensor)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


#: smallest and largest block of the block-maximum pre-filter of :func:`group_tail`
TAIL_BLOCK_RANGE = (8, 256)


def group_tail(xg: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    """The ``k`` largest (or smallest) values of each row, sorted from the extreme inwards, ``[G, k]``.

    Rows much longer than ``k`` are cut into blocks of ``B`` values (``B`` a power of two near ``S / 8k``); the
    ``k`` blocks with the largest maxima hold the ``k`` largest values (every value above the ``k``-th largest
    block maximum lies in a block whose maximum exceeds it, and the ``k`` chosen blocks hold at least ``k`` values
    no smaller than it), so ``topk`` runs over ``k·B`` values instead of the row. Exact, ties included.
    """
    g, n = xg.shape
    block = 1 << max(0, int(n // max(8 * k, 1)).bit_length() - 1)
    if k < 1 or block < TAIL_BLOCK_RANGE[0]:
        return torch.topk(xg, k, dim=1, largest=largest, sorted=True).values
    block = min(block, TAIL_BLOCK_RANGE[1])
    full = n - n % block
    blocks = xg[:, :full].reshape(g, -1, block)
    extreme = blocks.amax(-1) if largest else blocks.amin(-1)
    picked = torch.topk(extreme, k, dim=1, largest=largest, sorted=False).indices
    values = blocks.gather(1, picked[..., None].expand(-1, -1, block)).reshape(g, k * block)
    if full < n:  # the last values, short of a block, are always candidates
        values = torch.cat([values, xg[:, full:]], dim=1)
    return torch.topk(values, k, dim=1, largest=largest, sorted=True).values


def values_beyond(row: torch.Tensor, threshold: torch.Tensor, largest: bool, block: int = 32) -> torch.Tensor:
    """The values of the 1-D ``row`` that are ``>= threshold`` (``largest``) or ``<= threshold``, in row order.

    Only the blocks of ``block`` values whose maximum (minimum) reaches the threshold are compared value by value,
    so a threshold deep in a tail costs little more than one pass of block maxima.
    """
    full = row.numel() - row.numel() % block
    blocks = row[:full].reshape(-1, block)
    hit = blocks.amax(1) >= threshold if largest else blocks.amin(1) <= threshold
    values = torch.cat([blocks[hit].reshape(-1), row[full:]])
    return values[values >= threshold] if largest else values[values <= threshold]


def group_quantiles(xg: torch.Tensor, qs) -> torch.Tensor:
    """Per-row quantiles of a ``[G, S]`` tensor with linear interpolation (as ``torch.quantile``), ``[G, len(qs)]``.

    Uses one ``topk`` per tail for all the levels on that tail, so it works for any S (``torch.quantile``
    refuses more than 16M elements) and costs O(S) rather than a full sort; very long single rows are
    pre-filtered (see :func:`group_tail`), so a 100M-element tensor takes seconds.
    """
    n = xg.shape[1]
    ranks = []
    for q in qs:
        pos = float(q) * (n - 1)
        lo_rank = min(int(pos), n - 1)  # floor, pos >= 0
        ranks.append((lo_rank, min(lo_rank + 1, n - 1), pos - lo_rank))
    upper = [r for r in ranks if r[0] >= (n - 1) / 2]
    lower = [r for r in ranks if r[0] < (n - 1) / 2]
    top = group_tail(xg, n - min(r[0] for r in upper), largest=True) if upper else None
    bottom = group_tail(xg, max(r[1] for r in lower) + 1, largest=False) if lower else None
    out = []
    for lo_rank, hi_rank, frac in ranks:
        if lo_rank >= (n - 1) / 2:  # upper tail: top[:, j] is the (n-1-j)-th order statistic
            v_lo, v_hi = top[:, n - 1 - lo_rank], top[:, n - 1 - hi_rank]
        else:  # lower tail: bottom[:, j] is the j-th order statistic
            v_lo, v_hi = bottom[:, lo_rank], bottom[:, hi_rank]
        out.append(torch.lerp(v_lo, v_hi, torch.full_like(v_lo, frac)))
    return torch.stack(out, dim=1)


def group_quantile(xg: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of a ``[G, S]`` tensor (see :func:`group_quantiles`), ``[G]``."""
    return group_quantiles(xg, [q])[:, 0]


def strided_column_index(n: int, max_cols: int, device=None) -> torch.Tensor | None:
    """The columns :func:`strided_columns` keeps of ``n`` (``None``: all of them)."""
    if n <= max_cols:
        return None
    if max_cols <= 1:
        return torch.arange(max_cols, device=device, dtype=torch.int64)
    # exact integer arithmetic: round(i * (n - 1) / (max_cols - 1)); a float32 linspace overshoots for n > 2^24
    i = torch.arange(max_cols, device=device, dtype=torch.int64)
    return (2 * i * (n - 1) + (max_cols - 1)) // (2 * (max_cols - 1))


def strided_columns(xg: torch.Tensor, max_cols: int) -> torch.Tensor:
    """A deterministic, evenly strided subset of at most ``max_cols`` columns of a ``[G, S]`` tensor."""
    idx = strided_column_index(xg.shape[1], max_cols, xg.device)
    return xg if idx is None else xg.index_select(1, idx)


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` with a straight-through gradient."""
    return (x.floor() - x).detach() + x


def masked_group_quantile(xg: torch.Tensor, valid: torch.Tensor, qs) -> torch.Tensor:
    """Per-row quantiles of the valid entries of a ``[G, S]`` tensor (linear interpolation, as ``torch.quantile``).

    Rows hold different numbers of valid entries; one sort per call serves every quantile. A row with no valid
    entry gets 0.

    Args:
        xg: values, ``[G, S]``.
        valid: boolean mask of the entries that count, ``[G, S]``.
        qs: quantile levels in [0, 1].

    Returns:
        ``[G, len(qs)]`` quantiles.
    """
    srt = torch.where(valid, xg, torch.full_like(xg, float('inf'))).sort(dim=1).values
    n = valid.sum(dim=1)
    last = (n - 1).clamp_min(0)
    out = []
    for q in qs:
        pos = q * last.to(xg.dtype)
        lo_rank = pos.floor().long()
        hi_rank = torch.minimum(lo_rank + 1, last)
        frac = pos - lo_rank.to(xg.dtype)
        v_lo = srt.gather(1, lo_rank[:, None])[:, 0]
        v_hi = srt.gather(1, hi_rank[:, None])[:, 0]
        out.append(torch.where(n > 0, torch.lerp(v_lo, torch.where(n > 0, v_hi, v_lo), frac), torch.zeros_like(v_lo)))
    return torch.stack(out, dim=1)


def log_codes(x: torch.Tensor, scale: torch.Tensor, bits: int, levels_per_octave: int,
              flush_underflow: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes of the log quantizer ``q = clamp(round(-k·log2(x / Δ)), 0, 2^b - 1)``.

    ``k`` is ``levels_per_octave`` (1: base 2, 2: base √2). Non-positive ``x`` has ``log2 = -inf`` and takes the
    largest code. With ``flush_underflow``, values whose unclamped code is ``>= 2^b`` (too small for the code
    range) are marked in the returned mask (they dequantize to 0, as in RepQ-ViT / FQ-ViT code); otherwise the
    mask is ``None``.

    Returns:
        (codes as a float tensor, underflow mask or None).
    """
    qmax = 2**bits - 1
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        # values below Δ·2^(-(qmax + 2)/k) underflow either way; flooring them there keeps log2 finite, so the
        # straight-through round (t.round() - t) and log2's backward give no inf - inf or 0 / 0
        x = torch.maximum(x, scale * 2.0**(-(qmax + 2) / levels_per_octave))
        t = torch.log2(x / scale) * levels_per_octave
        t = round_ste(t)  # -q before clamping (round is symmetric)
    else:
        t = torch.log2(x.clamp_min(0) / scale) * levels_per_octave
        t = t.round_()
    mask = t < -qmax if flush_underflow else None
    return -t.clamp(-qmax, 0), mask


def log_dequant(codes: torch.Tensor, scale: torch.Tensor, levels_per_octave: int,
                mask: torch.Tensor | None) -> torch.Tensor:
    """``x̂ = Δ · 2^(-q / k)``, and 0 where ``mask`` (underflow) is set.

    For ``k = 2`` this equals the bit-shift form ``2^(-ceil(q/2)) · (1 + (√2 - 1)·(q mod 2)) · Δ`` of the
    RepQ-ViT / ADFQ-ViT code (same value, computed with one ``exp2``).
    """
    out = torch.exp2(codes * (-1.0 / levels_per_octave)) * scale
    return out if mask is None else out.masked_fill(mask, 0.0)


def _smallest_float32_mantissa_at_least(value: float) -> int:
    f = torch.tensor(value, dtype=torch.float32)
    if float(f) < value:
        f = torch.nextafter(f, torch.tensor(math.inf))
    return int(f.view(torch.int32)) & 0x7FFFFF


#: adding these to a float32's mantissa bits carries into bit 23 exactly when 1.m >= √2, 2^(1/4), 2^(3/4)
_CARRY_SQRT2 = (1 << 23) - _smallest_float32_mantissa_at_least(math.sqrt(2.0))
_CARRY_QUARTER = (1 << 23) - _smallest_float32_mantissa_at_least(2.0**0.25)
_CARRY_THREE_QUARTERS = (1 << 23) - _smallest_float32_mantissa_at_least(2.0**0.75)


def round_log2_index_(t: torch.Tensor, levels_per_octave: int = 1,
                      scratch: torch.Tensor | None = None) -> torch.Tensor:
    """``round(k·log2(t)) + 127·k`` as int32, computed in place in the storage of the float32 tensor ``t``.

    With ``t = 1.m · 2^E``: ``round(log2 t) = E + 1[1.m >= √2]`` and
    ``round(2·log2 t) = 2E + 1[1.m >= 2^(1/4)] + 1[1.m >= 2^(3/4)]``. Adding ``2^23 - mantissa(threshold)`` to the
    bits carries into the exponent field exactly when the mantissa reaches the threshold, so a shift by 23 reads
    out the biased exponent (``E + 127``) plus that comparison.
    Exact (no tie is possible, the thresholds being irrational) for positive normal numbers; zero and subnormal
    inputs give ``<= k`` (``round(k·log2) <= -126·k``), negative inputs a negative index.

    Args:
        t: float32 tensor, overwritten.
        levels_per_octave: k, 1 or 2.
        scratch: for k = 2, an int32 tensor of ``t``'s shape for the second comparison (default: a new one).

    Returns:
        the int32 view of ``t``'s storage holding the index.
    """
    bits = t.view(torch.int32)
    if levels_per_octave == 1:
        return bits.add_(_CARRY_SQRT2).bitwise_right_shift_(23)
    # (bits + carry) >> 23 is the exponent field plus the comparison bit: the two sums give 2E + both bits
    lower = torch.add(bits, _CARRY_QUARTER, out=scratch).bitwise_right_shift_(23)
    return bits.add_(_CARRY_THREE_QUARTERS).bitwise_right_shift_(23).add_(lower)


def round_log2_float32_(t: torch.Tensor, levels_per_octave: int = 1) -> torch.Tensor:
    """``round(k·log2(t))`` in place for a float32 tensor, from its bits (no transcendental function); see
    :func:`round_log2_index_`. Zero, subnormal and negative inputs give ``<= -126·k``, i.e. underflow, which is
    also what ``log2`` gives them in a log quantizer whose largest code is at most ``126·k - 2`` (see
    :func:`log_fake_quant`).

    Args:
        t: float32 tensor, overwritten.
        levels_per_octave: k, 1 or 2.
    """
    t.copy_(round_log2_index_(t, levels_per_octave))
    return t.sub_(127 * levels_per_octave)


def _log_dequant_from_rounded_(t: torch.Tensor, scale: torch.Tensor, qmax: int, k: int,
                               flush_underflow: bool) -> torch.Tensor:
    """``Δ · 2^(-q/k)`` in place from ``t = round(k·log2(x/Δ))`` (i.e. ``-q`` before clamping)."""
    if flush_underflow:  # codes beyond 2^b - 1 -> -inf, whose exp2 is exactly 0 (one fused pass, no mask)
        torch.nn.functional.threshold_(t, -qmax - 0.5, -math.inf)
        t.clamp_max_(0)
    else:
        t.clamp_(-qmax, 0)
    if k != 1:
        t.mul_(1.0 / k)  # exact for k in {1, 2}: -q/k
    return t.exp2_().mul_(scale)


#: elements per block of :func:`log_fake_quant_per_tensor` (its scratch block is reused, so a call allocates
#: only its output)
LOG_BLOCK = 1 << 18


def _log_table(scale: torch.Tensor, qmax: int, k: int, flush_underflow: bool, offset, device,
               index_k: int) -> torch.Tensor:
    """``Δ · 2^(-q/k) + offset`` for every index ``round(k·log2(x/Δ)) + 127·index_k`` that
    :func:`round_log2_index_` gives with ``levels_per_octave=index_k`` (``index_k`` is ``k``, or 1 for the squared
    form of :func:`log_fake_quant_per_tensor`), computed by the float32 operations of the element-wise path (so
    both give identical values)."""
    table = torch.arange(256 * index_k + 1, dtype=torch.float32, device=device).sub_(127 * index_k)
    table = _log_dequant_from_rounded_(table, scale.reshape(()), qmax, k, flush_underflow)
    return table if offset is None else table.add_(offset)


def log_fake_quant_per_tensor(x: torch.Tensor, scale: torch.Tensor, bits: int, levels_per_octave: int,
                              flush_underflow: bool, shift=None, eps: float = 0.0, clamp_below: bool = True,
                              offset=None) -> torch.Tensor | None:
    """The no-autograd log fake quantization of ``t = x - shift`` (floored at 0 when ``clamp_below``) ``+ eps``
    with one scale, plus ``offset``; ``None`` where it does not apply (not float32, a scale per group, k not in
    {1, 2}, or codes too wide), and the caller takes the element-wise path.

    Works through ``x`` in blocks of :data:`LOG_BLOCK` values with one reused scratch block: each block is shifted,
    divided by Δ, turned into the index ``round(k·log2(t/Δ)) + 127·k`` from its bits (:func:`round_log2_index_`)
    and read out of a table of the dequantized values (:func:`_log_table`). Every value equals the element-wise
    path's; the call allocates only its output.

    Base √2 with codes below 126 squares the block instead: ``round(log2(fl(t·t))) = round(2·log2 t)`` for every
    float32 ``t`` (checked over all 2^23 mantissas by the tests; the mantissa of ``t²`` does not depend on
    ``t``'s exponent), one comparison instead of two. ``t²`` is normal or infinite for every ``t`` whose code is
    at most 125 (``t >= 2^-63``); smaller ``t`` give a subnormal or zero ``t²`` whose index still underflows.
    """
    k = levels_per_octave
    qmax = 2**bits - 1
    if x.dtype != torch.float32 or scale.numel() != 1 or k not in (1, 2) or qmax > 126 * k - 2:
        return None
    squared = k == 2 and qmax <= 125
    table = _log_table(scale, qmax, k, flush_underflow, offset, x.device, index_k=1 if squared else k)
    scale = scale.reshape(())
    flat = x.detach().reshape(-1)
    n = flat.numel()
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    scratch = torch.empty(min(n, LOG_BLOCK), dtype=torch.float32, device=x.device)
    for start in range(0, n, LOG_BLOCK):
        m = min(LOG_BLOCK, n - start)
        t, o = scratch[:m], out[start:start + m]
        if shift is None:
            torch.clamp_min(flat[start:start + m], 0, out=t)
        else:
            torch.sub(flat[start:start + m], shift, out=t)
            if clamp_below:
                t.clamp_min_(0)
        if eps:
            t.add_(eps)
        t.div_(scale)
        if squared:
            index = round_log2_index_(t.mul_(t), 1)
        else:  # the output block is the scratch of the second comparison until the lookup overwrites it
            index = round_log2_index_(t, k, scratch=o.view(torch.int32))
        torch.index_select(table, 0, index.clamp_min_(0), out=o)  # negative inputs (a -0.0, say) underflow
    return out.view(x.shape)


def log_fake_quant(x: torch.Tensor, scale: torch.Tensor, bits: int, levels_per_octave: int,
                   flush_underflow: bool, inplace: bool = False, offset=None) -> torch.Tensor:
    """``log_dequant(*log_codes(x)) + offset``, the same values computed with fewer passes (per-tensor float32
    scales: :func:`log_fake_quant_per_tensor`).

    Args:
        x: values; negative ones count as 0.
        scale: Δ, broadcasting against ``x``.
        bits, levels_per_octave, flush_underflow: see :func:`log_codes`.
        inplace: ``x`` is a non-negative scratch tensor that may be overwritten (no autograd).
        offset: optional value added to the result (e.g. a shift undone).
    """
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        codes, mask = log_codes(x, scale, bits, levels_per_octave, flush_underflow)
        out = log_dequant(codes, scale, levels_per_octave, mask)
        return out if offset is None else out + offset
    fast = log_fake_quant_per_tensor(x, scale, bits, levels_per_octave, flush_underflow, offset=offset)
    if fast is not None:
        return fast
    qmax = 2**bits - 1
    k = levels_per_octave
    t = x if inplace else x.clamp_min(0)
    t = t.div_(scale)
    if t.dtype == torch.float32 and k in (1, 2) and qmax <= 126 * k - 2:
        round_log2_float32_(t, k)
    else:
        t.log2_()
        if k != 1:
            t.mul_(k)
        t.round_()  # -q before clamping: round(-k·L) == -round(k·L) (round half to even is symmetric)
    out = _log_dequant_from_rounded_(t, scale, qmax, k, flush_underflow)
    return out if offset is None else out.add_(offset)


def log_round(v: torch.Tensor) -> torch.Tensor:
    """FQ-ViT's rounding of ``v > 0`` to the nearest power of two in the linear domain: ``f = floor(log2 v)``,
    plus 1 when ``v - 2^f >= 2^(f-1)`` (i.e. ``v >= 1.5·2^f``); returns the exponent as a float tensor."""
    f = torch.floor(torch.log2(v))
    return f + ((v - torch.exp2(f)) >= torch.exp2(f - 1)).to(v.dtype)
