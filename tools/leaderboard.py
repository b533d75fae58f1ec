"""Leaderboard of a results store: Markdown and CSV tables, a self-contained HTML page, plots of metric vs bits.

    python tools/leaderboard.py STORE [--out-dir DIR] [--task T ...] [--model M ...] [--method M ...]
                                [--bits 4 W4A8 ...] [--since 2026-01-01] [--until DATE] [--commit SHA ...]
                                [--title TEXT] [--no-plots]

STORE is a SQLite results store or a JSON-lines export. Writes DIR/leaderboard.{md,csv,html} and
DIR/plots/*.{png,svg} (default DIR: work_dirs/leaderboard) and prints the Markdown. Tables are methods x models
x bit widths with box AP / mask AP (detection), top-1 (classification) or feature fidelity, the drop from
float, and mean ± std over calibration seeds where several are stored.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.results import RecordError, ResultStore, StoreError, read_jsonl  # noqa: E402
from quant_hooks.results.leaderboard import filter_records  # noqa: E402
from quant_hooks.results.publish import write_leaderboard  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('store', help='results store (.sqlite) or JSON-lines export (.jsonl)')
    p.add_argument('--out-dir', default='work_dirs/leaderboard')
    p.add_argument('--task', nargs='+', help='detection / classification / fidelity / speed')
    p.add_argument('--model', nargs='+')
    p.add_argument('--method', nargs='+', help='method names as shown (MinMax) or types (MinMaxPTQ)')
    p.add_argument('--bits', nargs='+', help='N (W = A = N), WnAm or n/m')
    p.add_argument('--since', help='records created on or after this ISO date')
    p.add_argument('--until', help='records created on or before this ISO date')
    p.add_argument('--commit', nargs='+', help='git commit (prefix) of the code that produced the records')
    p.add_argument('--title', default='Leaderboard')
    p.add_argument('--no-plots', action='store_true')
    return p.parse_args(argv)


def load_records(path: str, **filters) -> list[dict]:
    """Records of a store or a JSON-lines file, with the store filters applied."""
    if not osp.isfile(path):
        raise StoreError(f'results store {path!r} does not exist')
    if path.endswith('.jsonl'):
        with ResultStore(':memory:') as mem:
            mem.append(read_jsonl(path))
            return mem.records(**filters)
    with ResultStore(path) as store:
        return store.records(**filters)


def main(argv=None) -> dict:
    args = parse_args(argv)
    filters = dict(task=args.task, model=args.model, since=args.since, until=args.until, commit=args.commit)
    records = filter_records(load_records(args.store, **filters), method=args.method, bits=args.bits)
    used = {k: v for k, v in dict(filters, method=args.method, bits=args.bits).items() if v}
    subtitle = f'{len(records)} records from {args.store}' + (f', filters {used}' if used else '')
    paths = write_leaderboard(records, args.out_dir, args.title, subtitle, plots=not args.no_plots)
    with open(paths['markdown']) as f:
        print(f.read())
    print(f'written: {paths["markdown"]}, {paths["csv"]}, {paths["html"]} and {len(paths["plots"])} plot files')
    return paths


if __name__ == '__main__':
    try:
        main()
    except (StoreError, RecordError, ValueError) as e:
        print(f'leaderboard: error: {e}', file=sys.stderr)
        sys.exit(2)
