"""Leaderboard tables from result records: methods x models x bit widths, mean ± std over calibration seeds.

Records are grouped by (task, model, method, W bits, A bits, scope). Within a group, the latest record of each
calibration seed counts (a rerun replaces the earlier one); the quantized metric is the mean over seeds with the
sample standard deviation when two or more seeds are stored, and the float value (the same for every seed) is
the mean of the groups' float passes. ``delta`` is quantized minus float.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field

from .metrics import METRICS, TASK_METRICS, MetricSpec, method_label, metric_value


@dataclass
class Stat:
    """A metric over seeds: mean, sample std (``None`` for one seed) and the values."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 and all(map(math.isfinite, self.values)) else None


@dataclass
class Row:
    """One leaderboard line."""

    task: str
    model: str
    method: str
    w_bits: int
    a_bits: int
    scope: str
    seeds: list = field(default_factory=list)
    quant: dict[str, Stat] = field(default_factory=dict)
    float: dict[str, float] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.task, self.model, self.method, self.w_bits, self.a_bits, self.scope)

    def delta(self, name: str) -> float | None:
        if name not in self.quant or self.float.get(name) is None:
            return None
        return self.quant[name].mean - self.float[name]


def group_key(record: dict) -> tuple:
    return (record['task'], record['model'], method_label(record), record['w_bits'], record['a_bits'],
            record['scope'])


def latest_per_seed(records: list[dict]) -> dict[tuple, dict]:
    """(group key, seed) -> the latest record (by ``created_at``, then store order)."""
    latest: dict[tuple, dict] = {}
    for order, r in sorted(enumerate(records), key=lambda x: (x[1]['created_at'], x[0])):
        latest[group_key(r) + (r['calibration'].get('seed'), )] = r
    return latest


def task_metrics(task: str, records: list[dict]) -> list[MetricSpec]:
    """The columns of a task: its standard metrics, or (speed and unknown tasks) every stored quant metric."""
    names = TASK_METRICS.get(task)
    if names:
        return [METRICS[n] for n in names]
    keys = sorted({k for r in records if r['task'] == task for k in r['metrics'].get('quant', {})})
    return [MetricSpec(k, k, k) for k in keys]


def aggregate(records: list[dict]) -> list[Row]:
    """Leaderboard rows, sorted by task, model, method, bits (high to low), scope."""
    rows: dict[tuple, Row] = {}
    floats: dict[tuple, dict[str, list[float]]] = {}
    specs = {task: task_metrics(task, records) for task in {r['task'] for r in records}}
    for (*key, seed), r in latest_per_seed(records).items():
        key = tuple(key)
        row = rows.setdefault(key, Row(*key))
        row.seeds.append(seed)
        row.run_ids.append(r['run_id'])
        for spec in specs[r['task']]:
            q = metric_value(r, spec, 'quant')
            if q is not None:
                row.quant.setdefault(spec.name, Stat([])).values.append(q)
            f = metric_value(r, spec, 'float')
            if f is not None:
                floats.setdefault(key, {}).setdefault(spec.name, []).append(f)
    for key, values in floats.items():
        rows[key].float = {name: statistics.fmean(v) for name, v in values.items()}
    for row in rows.values():
        row.seeds.sort(key=lambda s: (s is None, s))
    return sorted(rows.values(), key=lambda r: (r.task, r.model, r.method, -r.w_bits, -r.a_bits, r.scope))


def float_rows(rows: list[Row]) -> dict[tuple, dict[str, float]]:
    """(task, model, scope) -> the float metrics (mean over the groups that evaluated the float model)."""
    acc: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        for name, value in row.float.items():
            acc.setdefault((row.task, row.model, row.scope), {}).setdefault(name, []).append(value)
    return {k: {n: statistics.fmean(v) for n, v in d.items()} for k, d in acc.items()}


def _num(value: float | None, decimals: int) -> str:
    if value is None:
        return '-'
    if math.isinf(value):
        return 'inf' if value > 0 else '-inf'
    return f'{value:.{decimals}f}'


def _signed(value: float | None, decimals: int) -> str:
    if value is None:
        return '-'
    return _num(value, decimals) if value < 0 or math.isinf(value) else '+' + _num(value, decimals)


def format_stat(stat: Stat | None, decimals: int) -> str:
    if stat is None:
        return '-'
    if stat.std is None:
        return _num(stat.mean, decimals)
    return f'{_num(stat.mean, decimals)} ± {_num(stat.std, decimals)}'


def table_rows(rows: list[Row], task: str) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of one task's table, a float line before each model's quantized lines."""
    specs = [METRICS[n] for n in TASK_METRICS.get(task, ())] or _speed_specs(rows, task)
    # a change-from-float column only where some row has a float value (SQNR and speed figures have none)
    has_float = {s.name: any(s.name in r.float for r in rows if r.task == task) for s in specs}
    header = ['model', 'method', 'W/A', 'scope', 'seeds']
    for s in specs:
        header += [s.label] + ([f'Δ {s.label}'] if has_float[s.name] else [])
    lines = []
    floats = float_rows(rows)
    seen = set()
    for row in (r for r in rows if r.task == task):
        fkey = (row.task, row.model, row.scope)
        if fkey in floats and fkey not in seen:
            seen.add(fkey)
            cells = [row.model, 'float', '-', row.scope, '-']
            for s in specs:
                cells += [_num(floats[fkey].get(s.name), s.decimals)] + (['-'] if has_float[s.name] else [])
            lines.append(cells)
        cells = [row.model, row.method, f'W{row.w_bits}/A{row.a_bits}', row.scope, str(len(row.seeds))]
        for s in specs:
            cells.append(format_stat(row.quant.get(s.name), s.decimals))
            if has_float[s.name]:
                cells.append(_signed(row.delta(s.name), s.decimals))
        lines.append(cells)
    return header, lines


def _speed_specs(rows: list[Row], task: str) -> list[MetricSpec]:
    names = sorted({n for r in rows if r.task == task for n in r.quant})
    return [MetricSpec(n, n, n, 1.0, 3) for n in names]


def to_markdown(rows: list[Row], title: str = 'Leaderboard') -> str:
    """One Markdown table per task."""
    out = [f'# {title}', '']
    for task in sorted({r.task for r in rows}):
        header, lines = table_rows(rows, task)
        out += [f'## {task}', '', '| ' + ' | '.join(header) + ' |', '|' + '|'.join(
            ':---' if i < 4 else '---:' for i in range(len(header))) + '|']
        out += ['| ' + ' | '.join(cells) + ' |' for cells in lines]
        out.append('')
    if not rows:
        out += ['(no records match)', '']
    return '\n'.join(out)


def _csv_num(value: float | None) -> str:
    if value is None:
        return ''
    return repr(round(value, 6)) if math.isfinite(value) else str(value)


def to_csv(rows: list[Row]) -> str:
    """Every row of every task with numbers at full precision (6 decimals): mean, std, n, float, delta."""
    names = [n for n in METRICS if any(n in r.quant or n in r.float for r in rows)]
    names += sorted({n for r in rows for n in r.quant if n not in METRICS})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    header = ['task', 'model', 'method', 'w_bits', 'a_bits', 'scope', 'seeds']
    for n in names:
        header += [f'{n}_mean', f'{n}_std', f'{n}_n', f'{n}_float', f'{n}_delta']
    writer.writerow(header)
    for r in rows:
        cells = [r.task, r.model, r.method, r.w_bits, r.a_bits, r.scope, ' '.join(map(str, r.seeds))]
        for n in names:
            stat = r.quant.get(n)
            cells += [_csv_num(stat.mean if stat else None), _csv_num(stat.std if stat else None),
                      stat.n if stat else '', _csv_num(r.float.get(n)), _csv_num(r.delta(n))]
        writer.writerow(cells)
    return buf.getvalue()


def filter_records(records: list[dict], method: list[str] | None = None, bits: list[str] | None = None) -> list[dict]:
    """Filters the store cannot apply: method label (``MinMax``) and bit widths (``4`` = W4/A4, ``W4A8``)."""
    out = records
    if method:
        wanted = {m.lower() for m in method}
        out = [r for r in out if method_label(r).lower() in wanted or str(r['method'].get('type')).lower() in wanted]
    if bits:
        pairs = {parse_bits(b) for b in bits}
        out = [r for r in out if (r['w_bits'], r['a_bits']) in pairs]
    return out


def parse_bits(text: str) -> tuple[int, int]:
    """``'4'`` -> (4, 4); ``'W4A8'`` / ``'w4a8'`` / ``'4/8'`` -> (4, 8)."""
    t = str(text).strip().lower()
    m = re.fullmatch(r'(\d+)', t) or re.fullmatch(r'w(\d+)\s*/?\s*a(\d+)', t) or re.fullmatch(r'(\d+)/(\d+)', t)
    if not m:
        raise ValueError(f'bits {text!r} are invalid: give N (W = A), WnAm or n/m')
    groups = m.groups()
    return int(groups[0]), int(groups[-1])
