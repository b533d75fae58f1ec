"""Cost of fake quantization in a real detector, per recipe, measured in one run (CPU by default).

For mmdet's Mask R-CNN Swin-T on real COCO images resized to a fixed size, and for every method named (each
built from its base ``configs/_base_/quant/<method>_w<b>a<b>.py``, with the detector config's adapter), reports:

- inference: time of the fake-quantized detector over the float detector (issue target <= 1.25 at W4/A4);
- calibration: time of the method's calibration on N images (every pass its searches need, reparameterization
  and folding included; no reconstruction) over N float detector forwards (target <= 2).

    python benchmarks/bench_detection_speed.py [--methods minmax adfq_vit ...] [--size 512] [--bits 4]
        [--num-images 8] [--eval-images 4] [--repeats 3] [--checkpoint CKPT] [--json OUT]
        [--method-options max_samples=65536 ...]

Float and quantized inference passes alternate and each figure is the median over repeats; the float forwards a
calibration is compared with are timed right before and right after it (their mean). Both therefore see the same
machine load. Without ``--checkpoint`` the detector has seeded random weights, so float and quantized models
propose the same (maximum) number of boxes and the heads cost the same in both.
"""
from __future__ import annotations

import argparse
import copy
import json
import os.path as osp
import statistics
import sys
import time

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

CONFIG = osp.join(REPO, 'configs/detection/mask_rcnn_swin_t_1x_coco_tiny_minmax_w8a8.py')
#: recipes without reconstruction (reconstruction is benchmarked by benchmarks/bench_reconstruction.py)
METHODS = ('minmax', 'percentile', 'omse', 'repq_vit', 'adfq_vit', 'ptq4vit', 'fq_vit', 'qhyvit', 'noisyquant')
TARGETS = dict(inference_ratio=1.25, calibration_ratio=2.0)


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=CONFIG, help='detector config (its model, data and quant_adapter are used)')
    p.add_argument('--checkpoint', help='detector weights (default: seeded random weights)')
    p.add_argument('--methods', nargs='+', default=list(METHODS), metavar='METHOD',
                   help=f'method bases under configs/_base_/quant/ (default: {" ".join(METHODS)})')
    p.add_argument('--size', type=int, default=512, help='images are resized to SIZE x SIZE')
    p.add_argument('--bits', type=int, default=4, choices=(4, 6, 8), help='weight and activation bits')
    p.add_argument('--num-images', type=int, default=8, help='calibration images (and float forwards)')
    p.add_argument('--eval-images', type=int, default=4, help='images per timed inference pass')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    p.add_argument('--json', help='also write the results here')
    p.add_argument('--method-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                   help='settings merged into every method config, e.g. max_samples=65536 (recorded in the results)')
    args = p.parse_args(argv)
    for m in args.methods:
        if not osp.isfile(method_config(m, args.bits)):
            raise SystemExit(f'bench_detection_speed: error: --methods {m!r} has no base '
                             f'{osp.relpath(method_config(m, args.bits), REPO)}; allowed values are '
                             f'{list(METHODS)} (and any other method base)')
    return args


def method_config(name: str, bits: int) -> str:
    return osp.join(REPO, 'configs', '_base_', 'quant', f'{name}_w{bits}a{bits}.py')


def _batches(cfg, dataset_cfg, n, size):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    pipeline = [dict(t, scale=(size, size), keep_ratio=False) if t['type'] == 'Resize' else t
                for t in cfg.test_dataloader.dataset.pipeline]
    dataset = DATASETS.build(dict(dataset_cfg, pipeline=pipeline))
    return [pseudo_collate([dataset[i % len(dataset)]]) for i in range(n)]


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _build(registry, cfg, key):
    from mmengine.registry import DefaultScope

    from quant_hooks.registry import build_setting
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        return build_setting(registry, copy.deepcopy(dict(cfg)), key)


def main(argv=None):
    return measure(parse_args(argv))


def measure(args):
    """Run the benchmark with parsed arguments (see ``parse_args``); returns the result dict."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from tqdm import tqdm

    from quant_hooks.adapters import run_batches
    from quant_hooks.apis import load_config
    from quant_hooks.registry import MODEL_ADAPTERS, QUANT_METHODS

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    float_model = MODELS.build(cfg.model).eval()
    if args.checkpoint:
        from quant_hooks.utils.checkpoint import load_checkpoint
        load_checkpoint(float_model, args.checkpoint)
    calib = _batches(cfg, cfg.quant_calibration.dataset, args.num_images, args.size)
    evals = _batches(cfg, cfg.test_dataloader.dataset, args.eval_images, args.size)

    def infer(model):
        with torch.no_grad():
            for batch in evals:
                model.test_step(batch)

    def float_forwards():
        with torch.no_grad():
            for batch in calib:
                float_model.test_step(batch)

    infer(float_model)  # warm-up (allocator, lazy init)
    rows = {}
    bar = tqdm(args.methods, desc='recipes', unit='method', file=sys.stdout, dynamic_ncols=True)
    for name in bar:
        bar.set_postfix_str(name)
        method_cfg = dict(Config.fromfile(method_config(name, args.bits)).quant_method, **args.method_options)
        method = _build(QUANT_METHODS, method_cfg, 'quant_method')
        adapter = _build(MODEL_ADAPTERS, cfg.quant_adapter, 'quant_adapter')
        quant_model = copy.deepcopy(float_model)
        sites = adapter.prepare(quant_model)
        before = _time(float_forwards)
        calib_s = _time(lambda: method.run(quant_model, sites, lambda: run_batches(adapter, quant_model, calib)))
        forward_s = (before + _time(float_forwards)) / 2
        infer(quant_model)  # warm-up of the quantized model (weight cache)
        float_t, quant_t = [], []
        for _ in range(args.repeats):
            float_t.append(_time(lambda: infer(float_model)))
            quant_t.append(_time(lambda: infer(quant_model)))
        med = statistics.median
        rows[name] = dict(
            method=method.describe()['type'], sites=len(sites),
            inference_ratio=med(quant_t) / med(float_t), inference_float_s_per_image=med(float_t) / args.eval_images,
            inference_quant_s_per_image=med(quant_t) / args.eval_images,
            calibration_ratio=calib_s / forward_s, calibration_s=calib_s, float_forwards_s=forward_s)
        tqdm.write(_row(name, rows[name]), file=sys.stdout)
        del quant_model, sites, method
    result = dict(model='Mask R-CNN Swin-T' + (' (random weights)' if not args.checkpoint else ''),
                  config=osp.relpath(args.config, REPO), size=args.size, bits=args.bits,
                  threads=torch.get_num_threads(), repeats=args.repeats, calibration_images=args.num_images,
                  eval_images=args.eval_images, method_options=dict(args.method_options), targets=TARGETS,
                  methods=rows)
    print(format_table(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


def _row(name, r):
    flags = ''.join(' *' if r[k] > t else '  ' for k, t in TARGETS.items())
    return (f'| {name:12s} | {r["method"]:10s} | {r["inference_ratio"]:9.3f} | {r["inference_quant_s_per_image"]:7.2f} | '
            f'{r["inference_float_s_per_image"]:7.2f} | {r["calibration_ratio"]:11.3f} | {r["calibration_s"]:8.1f} | '
            f'{r["float_forwards_s"]:8.1f} |{flags}')


def _options(options) -> str:
    return '; method options ' + ', '.join(f'{k}={v}' for k, v in options.items()) if options else ''


def format_table(result) -> str:
    head = (f'W{result["bits"]}/A{result["bits"]} {result["model"]}, {result["size"]}x{result["size"]}, '
            f'{result["threads"]} threads; inference over {result["eval_images"]} images (median of '
            f'{result["repeats"]}), calibration on {result["calibration_images"]} images'
            f'{_options(result.get("method_options"))}\n'
            f'| {"method":12s} | {"type":10s} | inference | quant s | float s | calibration | calib s | float s  |\n'
            f'|{"-" * 14}|{"-" * 12}|{"-" * 11}|{"-" * 9}|{"-" * 9}|{"-" * 13}|{"-" * 10}|{"-" * 10}|')
    lines = [head] + [_row(n, r) for n, r in result['methods'].items()]
    over = {k: [n for n, r in result['methods'].items() if r[k] > t] for k, t in TARGETS.items()}
    for k, t in TARGETS.items():
        lines.append(f'{k} <= {t}: ' + ('yes, every method' if not over[k] else 'NO: ' + ', '.join(over[k])))
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
