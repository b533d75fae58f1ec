"""Quantize a model with a PTQ method and evaluate it (float and quantized), like mmdet's tools/test.py.

    python tools/quant_test.py CONFIG [CHECKPOINT] [--work-dir DIR] [--out results.pkl]
                               [--cfg-options quant.method.w_bits=4 ...] [--launcher {none,pytorch,slurm,mpi}]

Writes WORK_DIR/quant_results.json (the result record: float and quantized metrics side by side, the method,
the calibration images, the number of quantized sites, timings, versions; see quant_hooks/results/schema.py)
and WORK_DIR/quant_state.pth (the calibrated quantizers). With --store PATH (or the config key
`results_store`) the record is also appended to that SQLite results store.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.apis import (DictAction, format_comparison, init_cpu_distributed, load_config,  # noqa: E402
                              run_quant_test)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Post-training quantization test (mmdet tools/test.py habits)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help="model checkpoint (.pth / .safetensors); default: the config's `checkpoint` (trained "
                             'weights it ships with), else the model has random weights')
    parser.add_argument('--work-dir', help='directory for logs, results JSON and quantizer state')
    parser.add_argument('--out', help='dump the quantized predictions to this pickle file')
    parser.add_argument('--no-float', action='store_true', help='skip the float reference evaluation')
    parser.add_argument('--store', help='append the result record to this SQLite results store '
                        '(default: the config key results_store, if set)')
    parser.add_argument('--load-state', help='evaluate from a saved quantizer state instead of calibrating')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. quant_method.w_bits=4 quant_calibration.seed=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.load_state:
        for hook in cfg.custom_hooks:
            if hook.get('type', '').endswith('PTQHook'):
                hook['load_state'] = args.load_state
    init_cpu_distributed(args.launcher, cfg)
    record = run_quant_test(cfg, args.checkpoint, eval_float=not args.no_float, out=args.out, store=args.store)
    from mmengine.dist import is_main_process
    if is_main_process():
        print(format_comparison(record))
        print(f'results: {osp.join(cfg.work_dir, "quant_results.json")}')
    return record


if __name__ == '__main__':
    from quant_hooks.apis import USER_ERRORS
    try:
        main()
    except USER_ERRORS as e:
        print(f'quant_test: error: {e}', file=sys.stderr)
        sys.exit(2)
