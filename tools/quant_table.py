"""Float and quantized box / mask AP of one trained detector for several methods and bit widths, as a Markdown table.

    python tools/quant_table.py vitdet_mask_rcnn_vit_s14_shapes [--methods minmax repq_vit ...]
                                [--bits w8a8 w6a6 w4a4] [--work-dir work_dirs/quant_table] [--out table.md] [--resume]

Runs configs/detection/<MODEL>_<method>_<bits>.py through tools/quant_test.py, one after another (the float pass
only once), and prints one row per method with box / mask AP per bit width. Each run keeps its own work dir
(``<work-dir>/<method>_<bits>/quant_results.json``); with ``--resume`` a run whose results file exists is read back
instead of run again, so an interrupted table continues where it stopped.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
KEYS = ('coco/bbox_mAP', 'coco/segm_mAP')
#: the recipes without reconstruction (reconstruction recipes: add them with --methods)
METHODS = ('minmax', 'percentile', 'omse', 'repq_vit', 'adfq_vit', 'ptq4vit', 'fq_vit', 'qhyvit', 'noisyquant')


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='model prefix of configs/detection/<MODEL>_<method>_<bits>.py')
    parser.add_argument('--methods', nargs='+', default=list(METHODS))
    parser.add_argument('--bits', nargs='+', default=['w8a8', 'w6a6', 'w4a4'])
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'quant_table'))
    parser.add_argument('--out', help='also write the table to this file')
    parser.add_argument('--resume', action='store_true', help='read back runs whose results file exists')
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from tools.quant_test import main as quant_test

    configs = {(m, b): osp.join(REPO, 'configs', 'detection', f'{args.model}_{m}_{b}.py')
               for m in args.methods for b in args.bits}
    missing = [c for c in configs.values() if not osp.isfile(c)]
    if missing:
        parser.error(f'configs not found: {missing}: allowed --methods / --bits are those of configs/detection')
    results, float_metrics = {}, None
    bar = tqdm(configs.items(), desc=f'quant table {args.model}', unit='run', file=sys.stdout, dynamic_ncols=True)
    for (method, bits), config in bar:
        bar.set_postfix_str(f'{method} {bits}')
        work = osp.join(args.work_dir, f'{method}_{bits}')
        record = _stored(work, config) if args.resume else None
        if record is None:
            run = [config, '--work-dir', work]
            record = quant_test(run if float_metrics is None else run + ['--no-float'])
        float_metrics = float_metrics or record['metrics'].get('float')
        results[method, bits] = record['metrics']['quant']
    if float_metrics is None:  # every run was read back and none kept its float pass
        float_metrics = quant_test([next(iter(configs.values())), '--work-dir',
                                    osp.join(args.work_dir, 'float')])['metrics']['float']

    def cell(metrics):
        return ' / '.join(f'{metrics[k]:.3f}' for k in KEYS)

    lines = [f'| method | float | {" | ".join(b.upper().replace("A", "/A") for b in args.bits)} |',
             '|---|---|' + '---|' * len(args.bits)]
    for method in args.methods:
        lines.append(f'| {method} | {cell(float_metrics)} | '
                     + ' | '.join(cell(results[method, b]) for b in args.bits) + ' |')
    table = f'box AP / mask AP (COCO AP@[.5:.95]), {args.model}\n\n' + '\n'.join(lines)
    print(table)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return table


def _stored(work_dir: str, config: str) -> dict | None:
    """The results record of a finished run of ``config`` in ``work_dir`` with the same resolved config and
    checkpoint (the run key of :mod:`quant_hooks.runs`), else None."""
    import json

    from quant_hooks.runs import build_run_config, run_key
    path = osp.join(work_dir, 'quant_results.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    if (record.get('config_hash'), record.get('checkpoint_sha256')) != run_key(build_run_config(config, None, work_dir),
                                                                             None):
        return None
    return record if record.get('metrics', {}).get('quant') else None


if __name__ == '__main__':
    main()
