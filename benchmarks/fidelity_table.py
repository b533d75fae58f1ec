"""Feature fidelity of every recipe on the real ViT-S/14, as one Markdown table (runs fidelity_real_vit.py each).

    python benchmarks/fidelity_table.py --weights W --images DIR --labels FILE [--bits 4 6] [--methods ...]
        [--max-images N] [--work-dir work_dirs/fidelity_table] [--cfg-options quant_method.max_samples=65536 ...]

Each row is one run of ``benchmarks/fidelity_real_vit.py`` (same calibration images, seed 0): SQNR of the final
features, mean / min cosine, 1-NN agreement with the float features, and the calibration time (the quantize step of
PTQHook: assignment, calibration passes, the recipe's own steps).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

#: method -> extra config options (the classification setting of each recipe)
METHODS = {
    'MinMax': [], 'Percentile': [], 'OMSE': [], 'RepQViT': [],
    'ADFQViT': ['quant_method.post_ln_granularity=per_token_static'],
    'PTQ4ViT': [], 'FQViT': [], 'QHyViT': [], 'NoisyQuant': ["quant_method.base.type=PTQ4ViT"],
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--weights', required=True)
    p.add_argument('--images', required=True)
    p.add_argument('--labels', required=True)
    p.add_argument('--bits', type=int, nargs='+', default=[4, 6])
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--num-calib', type=int, default=32)
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--work-dir', default='work_dirs/fidelity_table')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='config options added to every run, e.g. quant_method.max_samples=65536')
    args = p.parse_args(argv)
    import fidelity_real_vit
    rows = []
    for bits in args.bits:
        for method in args.methods:
            argv = ['--weights', args.weights, '--images', args.images, '--labels', args.labels, '--method', method,
                    '--w-bits', str(bits), '--a-bits', str(bits), '--num-calib', str(args.num_calib),
                    '--work-dir', osp.join(args.work_dir, f'{method}_w{bits}a{bits}')]
            if args.max_images:
                argv += ['--max-images', str(args.max_images)]
            if METHODS[method] or args.cfg_options:
                argv += ['--cfg-options', *METHODS[method], *args.cfg_options]
            record = fidelity_real_vit.main(argv)
            m = record['metrics']['quant']
            row = (f"| {method} | {bits}/{bits} | {m['feature/sqnr_db']:.2f} | {m['feature/cosine_mean']:.4f} | "
                   f"{m['feature/cosine_min']:.3f} | {m['feature/knn_same_neighbour']:.1f} | "
                   f"{record['quantize_seconds']:.1f} |")
            rows.append(row)
            print(row, flush=True)
    header = ('| method | W/A | SQNR (dB) | cos mean | cos min | 1-NN same neighbour (%) | calibration (s) |\n'
              '|---|---|---|---|---|---|---|')
    options = f'options: {" ".join(args.cfg_options)}\n' if args.cfg_options else ''
    print('\n' + options + header + '\n' + '\n'.join(rows))


if __name__ == '__main__':
    main()
