"""Cost of fake quantization in a real detector, measured in one run (CPU by default).

Reports, for mmdet's Mask R-CNN Swin-T on real COCO images resized to a fixed size (random weights):
- inference: time of the W/A fake-quantized detector over the float detector (target <= 1.25 at W4/A4);
- calibration: time of calibrating on N images over N float detector forwards (target <= 2).

    python benchmarks/bench_detection_speed.py [--size 512] [--bits 4] [--num-images 32] [--repeats 3] [--json OUT]

Float and quantized passes alternate, and each figure is the median over repeats, so both see the same machine
load.
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

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                  'configs/detection/mask_rcnn_swin_t_1x_coco_tiny_minmax_w8a8.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=CONFIG)
    p.add_argument('--size', type=int, default=512, help='images are resized to SIZE x SIZE')
    p.add_argument('--bits', type=int, default=4, help='weight and activation bits')
    p.add_argument('--num-images', type=int, default=32, help='calibration images (and float forwards)')
    p.add_argument('--eval-images', type=int, default=4, help='images per timed inference pass')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--json', help='also write the results here')
    return p.parse_args(argv)


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


def main(argv=None):
    return measure(parse_args(argv))


def measure(args):
    """Run the benchmark with parsed arguments (see ``parse_args``); returns the result dict."""
    from mmengine.registry import MODELS, init_default_scope

    from quant_hooks.adapters import MMDetSwinAdapter, run_batches
    from quant_hooks.apis import load_config
    from quant_hooks.methods import MinMaxPTQ

    cfg = load_config(args.config)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    float_model = MODELS.build(cfg.model).eval()
    quant_model = copy.deepcopy(float_model)
    adapter = MMDetSwinAdapter(scope='backbone')
    sites = adapter.prepare(quant_model)
    method = MinMaxPTQ(w_bits=args.bits, a_bits=args.bits)

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

    def calibrate():
        method.quantize(sites, lambda: run_batches(adapter, quant_model, calib))

    infer(float_model)  # warm-up (allocator, lazy init)
    calib_t, forward_t, float_t, quant_t = [], [], [], []
    for _ in range(args.repeats):
        forward_t.append(_time(float_forwards))
        calib_t.append(_time(calibrate))
        float_t.append(_time(lambda: infer(float_model)))
        quant_t.append(_time(lambda: infer(quant_model)))
    med = statistics.median
    result = dict(
        model='Mask R-CNN Swin-T (random weights)', size=args.size, bits=args.bits, sites=len(sites),
        threads=torch.get_num_threads(), repeats=args.repeats,
        inference_ratio=med(quant_t) / med(float_t), inference_float_s_per_image=med(float_t) / args.eval_images,
        inference_quant_s_per_image=med(quant_t) / args.eval_images,
        calibration_ratio=med(calib_t) / med(forward_t), calibration_images=args.num_images,
        calibration_s=med(calib_t), float_forwards_s=med(forward_t))
    print(f'W{args.bits}/A{args.bits} fake-quantized / float inference time: {result["inference_ratio"]:.3f} '
          f'({result["inference_quant_s_per_image"]:.2f} vs {result["inference_float_s_per_image"]:.2f} s/image, '
          f'{args.size}x{args.size}, {len(sites)} sites, {torch.get_num_threads()} threads)')
    print(f'calibration of {args.num_images} images / {args.num_images} float forwards: '
          f'{result["calibration_ratio"]:.3f} ({result["calibration_s"]:.1f} vs {result["float_forwards_s"]:.1f} s)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
