"""Regression checks: compare stored runs with a reference file or with the runs of a baseline commit.

A reference file (YAML or JSON) lists runs and the values expected from them::

    description: what these numbers are
    runs:
      - name: deit_t_tiny_w4a4                  # unique
        config: configs/regression/deit_t_tiny_fidelity_minmax_w4a4.py
        checkpoint: null                        # a file (its sha256 prefix identifies the run) or null
        options: {}                             # --cfg-options of the run
        seeds: [0]                              # calibration seeds (quant_calibration.seed); default [0]
        expect:
          - metric: sqnr                        # a short name (quant_hooks/results/metrics.py) or a record key
            value: 9.1444                       # the reference (mean over seeds), in the metric's shown scale
            std: 0.0                            # optional: the reference's spread over seeds
            tolerance: 0.05                     # allowed change in either direction
            xfail: "known: ..."                 # optional: a failure here is expected (reported, not fatal)

A change counts when ``|current - reference| > max(tolerance, spread_k * spread)``, ``spread`` being the
seed-to-seed standard deviation of the difference (``sqrt(std_ref² + std_cur²)``, zero with one seed): with
several seeds only changes beyond the seed spread are flagged. A drop is a REGRESSION (non-zero exit), a rise
is IMPROVED (reported, exit 0: update the reference). Every metric here is higher-is-better.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

from .leaderboard import latest_per_seed
from .metrics import TASK_METRICS, metric_spec, metric_value

RUN_KEYS = ('name', 'config', 'checkpoint', 'options', 'seeds', 'expect')
EXPECT_KEYS = ('metric', 'value', 'std', 'tolerance', 'xfail')
TOP_KEYS = ('description', 'runs')

#: check outcomes; FAILING ones make the exit status non-zero
OK, REGRESSION, IMPROVED, XFAIL, XPASS, MISSING = 'ok', 'REGRESSION', 'IMPROVED', 'XFAIL', 'XPASS', 'MISSING'
FAILING = (REGRESSION, MISSING)


class ReferenceError(ValueError):
    """The reference file is malformed; the message names the entry and field."""


@dataclass
class Check:
    """One compared value."""

    name: str
    metric: str
    reference: float | None
    current: float | None
    tolerance: float
    threshold: float
    status: str
    ref_std: float = 0.0
    cur_std: float = 0.0
    n: int = 0
    reason: str = ''

    @property
    def delta(self) -> float | None:
        if self.reference is None or self.current is None:
            return None
        return self.current - self.reference


def _load_text(path: str) -> dict:
    with open(path) as f:
        text = f.read()
    if path.endswith('.json'):
        return json.loads(text)
    import yaml
    return yaml.safe_load(text) or {}


def check_reference(ref: dict, path: str = 'reference') -> dict:
    """Validate a reference dict; returns it with defaults (``checkpoint``, ``options``, ``seeds``, ``std``)."""
    if not isinstance(ref, dict) or set(ref) - set(TOP_KEYS):
        raise ReferenceError(f'{path}: the top level must be a dict with the keys {list(TOP_KEYS)}')
    runs = ref.get('runs') or []
    if not isinstance(runs, list):
        raise ReferenceError(f'{path}: runs must be a list')
    names = set()
    for i, run in enumerate(runs):
        where = f'{path}: runs[{i}]'
        if not isinstance(run, dict):
            raise ReferenceError(f'{where} must be a dict')
        for key in ('name', 'config', 'expect'):
            if key not in run:
                raise ReferenceError(f'{where} is missing the field {key!r}')
        bad = set(run) - set(RUN_KEYS)
        if bad:
            raise ReferenceError(f'{where} fields {sorted(bad)} are invalid: allowed fields are {list(RUN_KEYS)}')
        if run['name'] in names:
            raise ReferenceError(f'{where}: name {run["name"]!r} is repeated')
        names.add(run['name'])
        run.setdefault('checkpoint', None)
        run['options'] = dict(run.get('options') or {})
        run['seeds'] = list(run.get('seeds') or [0])
        for j, e in enumerate(run['expect']):
            w = f'{where} ({run["name"]}).expect[{j}]'
            if not isinstance(e, dict):
                raise ReferenceError(f'{w} must be a dict')
            for key in ('metric', 'value', 'tolerance'):
                if key not in e:
                    raise ReferenceError(f'{w} is missing the field {key!r}')
            bad = set(e) - set(EXPECT_KEYS)
            if bad:
                raise ReferenceError(f'{w} fields {sorted(bad)} are invalid: allowed fields are {list(EXPECT_KEYS)}')
            try:
                metric_spec(e['metric'])
            except ValueError as err:
                raise ReferenceError(f'{w}: {err}') from err
            for key in ('value', 'tolerance', 'std'):
                if key in e and (isinstance(e[key], bool) or not isinstance(e[key], (int, float))):
                    raise ReferenceError(f'{w}.{key}={e[key]!r} is invalid: give a number')
            if e['tolerance'] < 0:
                raise ReferenceError(f'{w}.tolerance={e["tolerance"]} is invalid: allowed values are >= 0')
            e.setdefault('std', 0.0)
    ref['runs'] = runs
    return ref


def load_reference(path: str) -> dict:
    """Read and validate a reference file."""
    try:
        data = _load_text(path)
    except FileNotFoundError as e:
        raise ReferenceError(f'reference file not found: {path!r}') from e
    return check_reference(data, path)


def save_reference(ref: dict, path: str) -> None:
    """Write a reference file (YAML unless ``path`` ends with .json)."""
    check_reference(ref, path)
    if path.endswith('.json'):
        text = json.dumps(ref, indent=2) + '\n'
    else:
        import yaml
        text = yaml.safe_dump(ref, sort_keys=False, width=118)
    with open(path, 'w') as f:
        f.write(text)


def _stats(values: list[float]) -> tuple[float | None, float]:
    if not values:
        return None, 0.0
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) >= 2 and all(map(math.isfinite, values)) else 0.0
    return mean, std


def judge(name: str, metric: str, reference: float | None, ref_std: float, values: list[float], tolerance: float,
          spread_k: float = 2.0, xfail: str | None = None) -> Check:
    """Compare the current values (one per seed) with a reference value."""
    current, cur_std = _stats(values)
    spread = math.hypot(ref_std or 0.0, cur_std)
    threshold = max(float(tolerance), spread_k * spread)
    if reference is None or current is None:
        status = MISSING
    elif math.isinf(reference) or math.isinf(current):
        status = OK if reference == current else (IMPROVED if current > reference else REGRESSION)
    elif current - reference < -threshold:
        status = REGRESSION
    elif current - reference > threshold:
        status = IMPROVED
    else:
        status = OK
    reason = ''
    if xfail:
        reason = xfail
        if status == REGRESSION:
            status = XFAIL
        elif status == OK:
            status = XPASS
    return Check(name, metric, reference, current, float(tolerance), threshold, status, ref_std or 0.0, cur_std,
                 len(values), reason)


def compare_reference(ref: dict, records_by_run: dict[str, list[dict]], spread_k: float = 2.0) -> list[Check]:
    """Checks of every expected value; ``records_by_run``: run name -> its records (latest per seed counts)."""
    checks = []
    for run in ref['runs']:
        latest = latest_per_seed(records_by_run.get(run['name'], []))
        for e in run['expect']:
            spec = metric_spec(e['metric'])
            values = [v for r in latest.values() if (v := metric_value(r, spec)) is not None]
            checks.append(judge(run['name'], spec.name, e['value'], e.get('std', 0.0), values, e['tolerance'],
                                spread_k, e.get('xfail')))
    return checks


def compare_commits(records: list[dict], baseline: str, current: str, tolerance: dict[str, float] | float,
                    spread_k: float = 2.0) -> list[Check]:
    """Checks of every (task, model, method, bits, scope) group stored for both commits (prefixes); groups
    stored for only one of them are not compared (see :func:`unmatched_groups`)."""
    base, cur = latest_per_seed(_of(records, baseline)), latest_per_seed(_of(records, current))
    groups = sorted({k[:-1] for k in base} & {k[:-1] for k in cur})
    checks = []
    for g in groups:
        b_recs = [r for k, r in base.items() if k[:-1] == g]
        c_recs = [r for k, r in cur.items() if k[:-1] == g]
        task = g[0]
        name = '/'.join(map(str, (g[1], g[2], f'W{g[3]}A{g[4]}', g[5])))
        for metric in TASK_METRICS.get(task, ()):
            spec = metric_spec(metric)
            b_vals = [v for r in b_recs if (v := metric_value(r, spec)) is not None]
            c_vals = [v for r in c_recs if (v := metric_value(r, spec)) is not None]
            if not b_vals and not c_vals:
                continue
            tol = tolerance if isinstance(tolerance, (int, float)) else tolerance.get(metric, tolerance.get('*', 0.0))
            ref_mean, ref_std = _stats(b_vals)
            checks.append(judge(name, metric, ref_mean, ref_std, c_vals, tol, spread_k))
    return checks


def _of(records: list[dict], commit: str) -> list[dict]:
    return [r for r in records if (r['git'].get('commit') or '').startswith(commit)]


def unmatched_groups(records: list[dict], baseline: str, current: str) -> tuple[list[tuple], list[tuple]]:
    """Groups stored only for the baseline commit, and only for the current one."""
    base = {k[:-1] for k in latest_per_seed(_of(records, baseline))}
    cur = {k[:-1] for k in latest_per_seed(_of(records, current))}
    return sorted(base - cur), sorted(cur - base)


def _fmt(v: float | None) -> str:
    return '-' if v is None else f'{v:.4f}'


def format_checks(checks: list[Check]) -> str:
    """A table of the checks, flagged ones first."""
    order = {REGRESSION: 0, MISSING: 1, IMPROVED: 2, XFAIL: 3, XPASS: 4, OK: 5}
    nw = max([len(c.name) for c in checks] + [3])
    mw = max([len(c.metric) for c in checks] + [6])
    lines = [f'{"status":<10} {"run":<{nw}} {"metric":<{mw}} {"reference":>10} {"current":>10} {"delta":>9} '
             f'{"allowed":>8} seeds']
    for c in sorted(checks, key=lambda c: (order[c.status], c.name, c.metric)):
        delta = '-' if c.delta is None else f'{c.delta:+.4f}'
        line = (f'{c.status:<10} {c.name:<{nw}} {c.metric:<{mw}} {_fmt(c.reference):>10} {_fmt(c.current):>10} '
                f'{delta:>9} {c.threshold:>8.4f} {c.n}')
        if c.reason:
            line += f'  ({c.reason})'
        lines.append(line)
    counts = {s: sum(c.status == s for c in checks) for s in order}
    lines.append(', '.join(f'{n} {s}' for s, n in counts.items() if n) or 'no checks')
    return '\n'.join(lines)


def exit_status(checks: list[Check]) -> int:
    """1 when any check regressed or has no current value, else 0."""
    return 1 if any(c.status in FAILING for c in checks) else 0
