"""Float and quantized box / mask AP of one trained detector for several methods and bit widths, as a Markdown table.

    python tools/quant_table.py vitdet_mask_rcnn_vit_s14_shapes [--methods minmax percentile omse]
                                [--bits w8a8 w6a6 w4a4] [--work-dir work_dirs/quant_table] [--out table.md]

Runs configs/detection/<MODEL>_<method>_<bits>.py through tools/quant_test.py, one after another (the float pass
only once), and prints one row per method with box / mask AP per bit width.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
KEYS = ('coco/bbox_mAP', 'coco/segm_mAP')


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='model prefix of configs/detection/<MODEL>_<method>_<bits>.py')
    parser.add_argument('--methods', nargs='+', default=['minmax', 'percentile', 'omse'])
    parser.add_argument('--bits', nargs='+', default=['w8a8', 'w6a6', 'w4a4'])
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'quant_table'))
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)
    from tools.quant_test import main as quant_test

    configs = {(m, b): osp.join(REPO, 'configs', 'detection', f'{args.model}_{m}_{b}.py')
               for m in args.methods for b in args.bits}
    missing = [c for c in configs.values() if not osp.isfile(c)]
    if missing:
        parser.error(f'configs not found: {missing}: allowed --methods / --bits are those of configs/detection')
    results, float_metrics = {}, None
    for (method, bits), config in configs.items():
        run = [config, '--work-dir', osp.join(args.work_dir, f'{method}_{bits}')]
        record = quant_test(run if float_metrics is None else run + ['--no-float'])
        float_metrics = float_metrics or record['metrics']['float']
        results[method, bits] = record['metrics']['quant']

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


if __name__ == '__main__':
    main()
