"""Sensitivity report: one site role or one block at a time at the target bits, the rest in float.

    python tools/sensitivity.py CONFIG [CHECKPOINT] [--by {role,block,unit}] [--bits 4 | W4A8] [--metric box_ap]
                                [--cfg-options k=v ...] [--store S] [--work-dir DIR] [--out-dir DIR]

First a run quantizes everything at the target bits (with the float pass: the float metric and the list of
roles and blocks), then one run per role / block quantizes only that (``quant_method.only``). Every run is a
record in the store (resumable: stored runs are not repeated). Writes DIR/sensitivity.{md,csv} and a bar plot
DIR/sensitivity.{png,svg} of the metric lost, largest first.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.results import ResultStore  # noqa: E402
from quant_hooks.results.leaderboard import parse_bits, task_metrics  # noqa: E402
from quant_hooks.results.metrics import metric_spec, metric_value  # noqa: E402
from quant_hooks.results.sensitivity import BY, rank, sensitivity_units, to_csv, to_markdown  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?')
    p.add_argument('--by', choices=BY, default='role')
    p.add_argument('--bits', help='target bits: N (W = A) or WnAm; default: the config\'s')
    p.add_argument('--metric', help="default: the task's first metric (box_ap / top1 / sqnr)")
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    p.add_argument('--store', default='work_dirs/sensitivity/results.sqlite')
    p.add_argument('--work-dir', default='work_dirs/sensitivity')
    p.add_argument('--out-dir', help='default: WORK_DIR/report_<by>')
    return p.parse_args(argv)


def _options(items):
    from mmengine.config import DictAction
    out = {}
    for item in items:
        key, _, value = item.partition('=')
        out[key] = DictAction._parse_iterable(value)
    return out


def _run(store, config, checkpoint, options, work_dir, eval_float):
    """The stored record of a run, running it first when it is not in the store."""
    from quant_hooks.runs import build_run_config, repo_path, run_in_process, run_key, stored_runs
    cfg = build_run_config(config, options, work_dir)
    checkpoint = repo_path(checkpoint)
    key = run_key(cfg, checkpoint)
    if not stored_runs(store, key, eval_float):
        run_in_process(cfg, checkpoint, eval_float, store.path)
    return stored_runs(store, key, eval_float)[-1]


def main(argv=None) -> dict:
    from tqdm import tqdm

    from quant_hooks.results.plots import bar_plot
    args = parse_args(argv)
    options = _options(args.cfg_options)
    if args.bits:
        w, a = parse_bits(args.bits)
        options.update({'quant_method.w_bits': w, 'quant_method.a_bits': a})
    name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join(args.work_dir, f'report_{args.by}')
    with ResultStore(args.store) as store:
        full = _run(store, args.config, args.checkpoint, dict(options, results_extra=dict(sensitivity='all')),
                    osp.join(args.work_dir, 'all'), True)
        spec = metric_spec(args.metric) if args.metric else task_metrics(full['task'], [full])[0]
        units = sensitivity_units(full, args.by)
        # metrics that compare with the float pass (feature fidelity) need it in every run
        variant_float = spec.key not in full['metrics'].get('float', {})
        values = {}
        for label, only in tqdm(units.items(), desc=f'sensitivity by {args.by}', unit='run', file=sys.stdout):
            opts = dict(options, **{'quant_method.only': only, 'results_extra': dict(sensitivity=label, by=args.by)})
            record = _run(store, args.config, args.checkpoint, opts, osp.join(args.work_dir, label), variant_float)
            values[label] = metric_value(record, spec)
    float_value = metric_value(full, spec, 'float')
    ranked = rank(float_value, values)
    bits = f'W{full["w_bits"]}/A{full["a_bits"]}'
    title = f'Sensitivity of {full["model"]} ({full["method"]["type"]} {bits}) by {args.by}: {spec.label}'
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(markdown=osp.join(out_dir, 'sensitivity.md'), csv=osp.join(out_dir, 'sensitivity.csv'), plots=[])
    with open(paths['markdown'], 'w') as f:
        f.write(to_markdown(ranked, spec.label, float_value, metric_value(full, spec), title, spec.decimals))
    with open(paths['csv'], 'w') as f:
        f.write(to_csv(ranked))
    shown = [s for s in ranked if s.value is not None]
    finite = all(s.lost is not None for s in shown)
    for ext in ('png', 'svg'):
        paths['plots'].append(bar_plot(
            [s.unit for s in shown], [s.lost if finite else s.value for s in shown],
            osp.join(out_dir, f'sensitivity.{ext}'),
            f'{spec.label} lost vs float' if finite else f'{spec.label} with only this unit quantized', title))
    print(open(paths['markdown']).read())
    print(f'written: {paths["markdown"]}, {paths["csv"]}, {", ".join(paths["plots"])} ({name})')
    return dict(paths, ranked=ranked, full=full)


if __name__ == '__main__':
    from quant_hooks.apis import USER_ERRORS
    try:
        main()
    except (ValueError, *USER_ERRORS) as e:
        print(f'sensitivity: error: {e}', file=sys.stderr)
        sys.exit(2)
