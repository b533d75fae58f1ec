"""Sensitivity: quantize one site role or one block at a time (the rest in float), rank by metric lost.

The units come from the record of a run that quantized everything: its ``tensors_by_role`` (roles) and its
``blocks`` (the adapter's reconstruction units, e.g. ``blocks.3.attn``). ``by='block'`` groups those units into
transformer blocks (``blocks.3``); ``by='unit'`` keeps them apart.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

BY = ('role', 'block', 'unit')

_INDEX = re.compile(r'^(.*\.\d+)(\.[^.]+)+$')


def block_of(unit: str) -> str:
    """The transformer block of a unit: the name up to its last numeric component (``model.blocks.3.attn`` ->
    ``model.blocks.3``); a unit without one (``patch_embed``, ``head``) is its own block."""
    m = _INDEX.match(unit)
    return m.group(1) if m else unit


def sensitivity_units(record: dict, by: str) -> dict[str, dict]:
    """label -> the ``only`` option quantizing that unit alone, in model order for blocks / units."""
    if by not in BY:
        raise ValueError(f'by={by!r} is invalid: allowed values are {list(BY)}')
    if by == 'role':
        return {role: dict(roles=[role]) for role in sorted(record.get('tensors_by_role') or {})}
    units = list(record.get('blocks') or [])
    if not units:
        raise ValueError('the record lists no blocks (it predates the blocks field): rerun the full run')
    if by == 'unit':
        return {u: dict(blocks=[u]) for u in units}
    groups: dict[str, list[str]] = {}
    for u in units:
        groups.setdefault(block_of(u), []).append(u)
    return {label: dict(blocks=members) for label, members in groups.items()}


@dataclass
class Sensitivity:
    """One unit: the metric with only it quantized, and the metric lost against float."""

    unit: str
    value: float | None
    lost: float | None


def rank(float_value: float | None, values: dict[str, float | None]) -> list[Sensitivity]:
    """Units ranked by metric lost (``float - value``, largest first). Without a finite float value (fidelity
    metrics such as SQNR have none) the lowest value ranks first and ``lost`` is ``None``."""
    finite = float_value is not None and math.isfinite(float_value)
    out = [Sensitivity(u, v, (float_value - v) if finite and v is not None else None) for u, v in values.items()]

    def key(s):
        if s.value is None:
            return (1, 0.0, s.unit)
        return (0, -s.lost if finite else s.value, s.unit)

    return sorted(out, key=key)


def _num(v: float | None, decimals: int) -> str:
    if v is None:
        return '-'
    return 'inf' if math.isinf(v) else f'{v:.{decimals}f}'


def to_markdown(ranked: list[Sensitivity], metric_label: str, float_value: float | None, full_value: float | None,
                title: str, decimals: int = 2) -> str:
    lines = [f'# {title}', '', f'float: {_num(float_value, decimals)}; everything quantized: '
             f'{_num(full_value, decimals)}', '', f'| rank | quantized alone | {metric_label} | lost |',
             '|---:|:---|---:|---:|']
    for i, s in enumerate(ranked, 1):
        lines.append(f'| {i} | {s.unit} | {_num(s.value, decimals)} | {_num(s.lost, decimals)} |')
    return '\n'.join(lines) + '\n'


def to_csv(ranked: list[Sensitivity]) -> str:
    rows = ['rank,unit,value,lost']
    for i, s in enumerate(ranked, 1):
        rows.append(f'{i},{s.unit},{"" if s.value is None else repr(round(s.value, 6))},'
                    f'{"" if s.lost is None else repr(round(s.lost, 6))}')
    return '\n'.join(rows) + '\n'
