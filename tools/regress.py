"""Regression tracking: compare runs with a reference file or with the runs of a baseline commit.

    # run what the reference lists with the code as it is and compare; exit 1 on a regression
    python tools/regress.py check benchmarks/regression/reference.yaml [--store S] [--reuse | --no-run]
        [--spread-k 2]

    # measure a run and write its values into the reference (adds the entry, or re-measures an existing one)
    python tools/regress.py record benchmarks/regression/reference.yaml --name NAME [--config CONFIG]
        [--checkpoint CKPT] [--cfg-options k=v ...] [--seeds 0 1 2] [--metrics box_ap mask_ap]
        [--tolerance 0.3 [box_ap=0.5 ...]] [--xfail box_ap="reason"] [--store S] [--reuse]

    # compare the stored runs of the current commit with those of a baseline commit
    python tools/regress.py baseline --store S --baseline-commit SHA [--commit SHA] [--tolerance 0.3 ...]

Changes beyond the tolerance are printed in either direction; a drop is a REGRESSION (exit 1), a rise is
IMPROVED (exit 0). With several calibration seeds, only changes beyond the seed spread count (see
quant_hooks/results/regress.py). Exit 2: bad input (reference file, store, config).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.results import ResultStore, StoreError  # noqa: E402
from quant_hooks.results.regress import (ReferenceError, check_reference, compare_commits,  # noqa: E402
                                         compare_reference, exit_status, format_checks, load_reference,
                                         save_reference, unmatched_groups)

DEFAULT_STORE = 'work_dirs/regress/results.sqlite'


def parse_tolerance(items: list[str] | None, default: float = 0.1) -> dict[str, float]:
    """``['0.3', 'box_ap=0.5']`` -> ``{'*': 0.3, 'box_ap': 0.5}``."""
    out = {'*': default}
    for item in items or []:
        name, _, value = item.rpartition('=')
        try:
            out[name or '*'] = float(value)
        except ValueError as e:
            raise ReferenceError(f'--tolerance {item!r} is invalid: give a number or METRIC=NUMBER') from e
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    c = sub.add_parser('check', help='run the reference runs (if missing) and compare')
    c.add_argument('reference')
    c.add_argument('--store', default=DEFAULT_STORE)
    c.add_argument('--work-dir', default='work_dirs/regress')
    c.add_argument('--no-run', action='store_true', help='compare stored runs only (the latest of each seed); '
                   'missing runs are MISSING')
    c.add_argument('--reuse', action='store_true', help='run only what is not stored for the current commit '
                   '(clean checkout); default: run everything with the code as it is')
    c.add_argument('--spread-k', type=float, default=2.0, help='seed spreads a change must exceed (default 2)')
    r = sub.add_parser('record', help='measure a run and write its values into the reference')
    r.add_argument('reference')
    r.add_argument('--name', required=True)
    r.add_argument('--config')
    r.add_argument('--checkpoint')
    r.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    r.add_argument('--seeds', nargs='+', type=int)
    r.add_argument('--metrics', nargs='+', help="default: the task's metrics (box_ap mask_ap / top1 / sqnr ...)")
    r.add_argument('--tolerance', nargs='+', help='N for every metric and/or METRIC=N (default 0.1)')
    r.add_argument('--xfail', nargs='+', default=[], metavar='METRIC=REASON')
    r.add_argument('--store', default=DEFAULT_STORE)
    r.add_argument('--work-dir', default='work_dirs/regress')
    r.add_argument('--reuse', action='store_true', help='take runs stored for the current commit (clean checkout) '
                   'instead of running them again')
    b = sub.add_parser('baseline', help='compare the current commit\'s stored runs with a baseline commit\'s')
    b.add_argument('--store', required=True)
    b.add_argument('--baseline-commit', required=True)
    b.add_argument('--commit', help='default: the checkout\'s HEAD')
    b.add_argument('--tolerance', nargs='+', help='N for every metric and/or METRIC=N (default 0.1)')
    b.add_argument('--spread-k', type=float, default=2.0)
    return p.parse_args(argv)


def _options(items: list[str]) -> dict:
    from mmengine.config import DictAction
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            raise ReferenceError(f'--cfg-options {item!r} is invalid: give KEY=VALUE')
        out[key] = DictAction._parse_iterable(value)
    return out


def run_records(run: dict, store: ResultStore, work_dir: str, mode: str) -> list[dict]:
    """The records of a reference run (one per seed, the latest of each counts in the comparison).

    ``mode``: ``run`` runs every seed now (the code as it is); ``reuse`` runs only seeds not stored for the
    current commit with a clean checkout; ``stored`` runs nothing and takes what the store has.
    """
    from quant_hooks.results.provenance import git_state
    from quant_hooks.runs import build_run_config, repo_path, run_in_process, run_key, stored_runs
    git = git_state()
    records = []
    for seed in run['seeds']:
        options = dict(run['options'], **{'quant_calibration.seed': seed, 'results_extra': dict(regress=run['name'])})
        cfg = build_run_config(run['config'], options, osp.join(work_dir, f'{run["name"]}_seed{seed}'))
        checkpoint = repo_path(run['checkpoint'])
        key = run_key(cfg, checkpoint)
        current = [r for r in stored_runs(store, key, eval_float=True)
                   if git['commit'] and r['git'] == git and not git['dirty']]
        if mode == 'run' or (mode == 'reuse' and not current):
            print(f'regress: running {run["name"]} seed {seed} (config hash {key[0]})', flush=True)
            run_in_process(cfg, checkpoint, True, store.path)
        records += stored_runs(store, key, eval_float=True)
    return records


def cmd_check(args) -> int:
    ref = load_reference(args.reference)
    with ResultStore(args.store) as store:
        mode = 'stored' if args.no_run else 'reuse' if args.reuse else 'run'
        by_run = {run['name']: run_records(run, store, args.work_dir, mode) for run in ref['runs']}
    checks = compare_reference(ref, by_run, args.spread_k)
    print(format_checks(checks))
    return exit_status(checks)


def cmd_record(args) -> int:
    from quant_hooks.results.leaderboard import latest_per_seed, task_metrics
    from quant_hooks.results.metrics import metric_spec, metric_value
    from quant_hooks.results.regress import _stats
    ref = load_reference(args.reference) if osp.isfile(args.reference) else dict(runs=[])
    old = next((r for r in ref['runs'] if r['name'] == args.name), None)
    if old is None and not args.config:
        raise ReferenceError(f'{args.reference}: no run named {args.name!r}: give --config to add it')
    run = dict(name=args.name, config=args.config or old['config'],
               checkpoint=args.checkpoint if args.checkpoint is not None else (old or {}).get('checkpoint'),
               options=_options(args.cfg_options) if args.cfg_options or old is None else old['options'],
               seeds=args.seeds or (old or {}).get('seeds') or [0], expect=[])
    old_expect = {e['metric']: e for e in (old or {}).get('expect', [])}
    with ResultStore(args.store) as store:
        records = run_records(run, store, args.work_dir, 'reuse' if args.reuse else 'run')
    latest = list(latest_per_seed(records).values())
    if not latest:
        raise StoreError(f'no record of {args.name!r} in {args.store}')
    names = args.metrics or list(old_expect) or [s.name for s in task_metrics(latest[0]['task'], latest)]
    tolerance = parse_tolerance(args.tolerance)
    xfail = dict(x.split('=', 1) for x in args.xfail)
    for name in names:
        try:
            spec = metric_spec(name)
        except ValueError as e:
            raise ReferenceError(str(e)) from e
        mean, std = _stats([v for r in latest if (v := metric_value(r, spec)) is not None])
        if mean is None:
            raise ReferenceError(f'metric {name!r} is not in the records of {args.name!r}')
        prev = old_expect.get(spec.name, {})
        if spec.name in tolerance or args.tolerance:
            tol = tolerance.get(spec.name, tolerance['*'])
        else:
            tol = prev.get('tolerance', tolerance['*'])
        entry = dict(metric=spec.name, value=round(mean, 6), std=round(std, 6), tolerance=tol)
        reason = xfail.get(spec.name, prev.get('xfail'))
        if reason:
            entry['xfail'] = reason
        run['expect'].append(entry)
    ref['runs'] = [run if r['name'] == args.name else r for r in ref['runs']] if old else ref['runs'] + [run]
    save_reference(check_reference(ref, args.reference), args.reference)
    for e in run['expect']:
        print(f'{args.name}: {e["metric"]} = {e["value"]} (std {e["std"]} over {len(latest)} seeds), '
              f'tolerance {e["tolerance"]}')
    print(f'written: {args.reference}')
    return 0


def cmd_baseline(args) -> int:
    from quant_hooks.results.provenance import git_state
    current = args.commit or git_state()['commit']
    if not current:
        raise ReferenceError('the current commit is unknown (not a git checkout): give --commit')
    with ResultStore(args.store) as store:
        records = store.records()
    checks = compare_commits(records, args.baseline_commit, current, parse_tolerance(args.tolerance),
                             args.spread_k)
    only_base, only_cur = unmatched_groups(records, args.baseline_commit, current)
    print(f'baseline {args.baseline_commit} vs current {current[:12]}: {len(checks)} checks')
    print(format_checks(checks))
    if only_base or only_cur:
        print(f'not compared: {len(only_base)} groups stored only for the baseline, {len(only_cur)} only for the '
              'current commit')
    return exit_status(checks)


def main(argv=None) -> int:
    args = parse_args(argv)
    return dict(check=cmd_check, record=cmd_record, baseline=cmd_baseline)[args.command](args)


if __name__ == '__main__':
    from quant_hooks.apis import USER_ERRORS
    try:
        sys.exit(main())
    except (ReferenceError, *USER_ERRORS) as e:
        print(f'regress: error: {e}', file=sys.stderr)
        sys.exit(2)
