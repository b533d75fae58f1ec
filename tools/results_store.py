"""Inspect a results store and move records in and out as JSON lines.

    python tools/results_store.py list STORE [--model M ...] [--task T ...] [--since DATE] [--commit SHA ...]
    python tools/results_store.py export STORE OUT.jsonl [same filters]
    python tools/results_store.py import STORE IN.jsonl      # one transaction; run_ids already stored are skipped

Every record is validated on the way in and out; a bad line is named (FILE:LINE) and nothing is imported.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.results import RecordError, ResultStore, StoreError  # noqa: E402
from quant_hooks.results.metrics import method_label  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    for name in ('list', 'export', 'import'):
        s = sub.add_parser(name)
        s.add_argument('store')
        if name != 'list':
            s.add_argument('file')
        if name != 'import':
            s.add_argument('--task', nargs='+')
            s.add_argument('--model', nargs='+')
            s.add_argument('--since')
            s.add_argument('--until')
            s.add_argument('--commit', nargs='+')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command != 'import' and not osp.isfile(args.store):
        raise StoreError(f'results store {args.store!r} does not exist')
    with ResultStore(args.store) as store:
        if args.command == 'import':
            added, skipped = store.import_jsonl(args.file)
            print(f'imported {added} records into {args.store} ({skipped} already stored)')
            return 0
        filters = dict(task=args.task, model=args.model, since=args.since, until=args.until, commit=args.commit)
        if args.command == 'export':
            print(f'exported {store.export_jsonl(args.file, **filters)} records to {args.file}')
            return 0
        for r in store.records(**filters):
            commit = (r['git'].get('commit') or '-')[:10] + ('+' if r['git'].get('dirty') else '')
            print(f'{r["created_at"]}  {r["run_id"][:10]}  {r["task"]:<14} {r["model"]:<28} {method_label(r):<12} '
                  f'W{r["w_bits"]}/A{r["a_bits"]}  seed={r["calibration"].get("seed")}  {commit}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (StoreError, RecordError, OSError) as e:
        print(f'results_store: error: {e}', file=sys.stderr)
        sys.exit(2)
