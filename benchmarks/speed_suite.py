"""The speed benchmarks in one command, each stored as a result record (task ``speed``) like any other run.

    python benchmarks/speed_suite.py --store results.sqlite [--benchmarks detection processes]
        [--det-size 512 --det-bits 4 --det-num-images 32 --det-eval-images 4 --det-repeats 3]
        [--config CONFIG --checkpoint CKPT --nprocs 1 2]

- ``detection``: fake-quant overhead and calibration time of Mask R-CNN Swin-T (benchmarks/bench_detection_speed.py):
  quantized / float inference time and calibration / float-forward time.
- ``processes``: one quant_test run of CONFIG through tools/dist_quant_test.sh with 1 and with 2 processes (gloo
  on CPU): wall time of each command, its calibration and evaluation times, the fake-quant overhead of its
  evaluation (quantized / float pass), and the largest difference of any metric between process counts.
  The runs themselves are stored too (records with launcher pytorch and their world size).

The default CONFIG is the tiny regression run (headless DeiT-T at 32x32, seconds per run); pass a real model's
config and checkpoint for meaningful times. Print: one line per benchmark; the records' ``metrics.quant``.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))

BENCHMARKS = ('detection', 'processes')
DEFAULT_CONFIG = 'configs/regression/deit_t_tiny_fidelity_minmax_w4a4.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--store', required=True, help='results store the benchmark records go to')
    p.add_argument('--benchmarks', nargs='+', choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument('--work-dir', default='work_dirs/speed_suite')
    p.add_argument('--det-size', type=int, default=512)
    p.add_argument('--det-bits', type=int, default=4)
    p.add_argument('--det-num-images', type=int, default=32)
    p.add_argument('--det-eval-images', type=int, default=4)
    p.add_argument('--det-repeats', type=int, default=3)
    p.add_argument('--config', default=DEFAULT_CONFIG, help='config of the processes benchmark')
    p.add_argument('--checkpoint', help='checkpoint of the processes benchmark')
    p.add_argument('--nprocs', nargs='+', type=int, default=[1, 2])
    return p.parse_args(argv)


def speed_record(cfg, name: str, method: dict, adapter: dict, calibration: dict, metrics: dict, timings: dict,
                 extra: dict, checkpoint: str | None = None) -> dict:
    """A result record of task ``speed`` for a benchmark over ``cfg``'s model."""
    from quant_hooks.results import build_record
    cfg_dict = dict(cfg.to_dict(), quant_task='speed', model_name=name, speed_benchmark=extra)
    run = dict(method=method, adapter=adapter, calibration=calibration, metrics=dict(quant=metrics))
    return build_record(run, cfg_dict, cfg.filename, checkpoint, timings, extra=extra)


def bench_detection(args, store) -> dict:
    import bench_detection_speed

    from quant_hooks.apis import load_config
    from quant_hooks.methods import MinMaxPTQ
    bench_args = bench_detection_speed.parse_args([
        '--size', str(args.det_size), '--bits', str(args.det_bits), '--num-images', str(args.det_num_images),
        '--eval-images', str(args.det_eval_images), '--repeats', str(args.det_repeats)])
    result = bench_detection_speed.measure(bench_args)
    cfg = load_config(bench_args.config)
    keys = ('inference_ratio', 'inference_float_s_per_image', 'inference_quant_s_per_image', 'calibration_ratio',
            'calibration_s', 'float_forwards_s')
    record = speed_record(
        cfg, 'mask_rcnn_swin_t_1x (random weights)', MinMaxPTQ(w_bits=args.det_bits, a_bits=args.det_bits).describe(),
        dict(type='MMDetSwinAdapter', scope='backbone'),
        dict(split=cfg.quant_calibration.dataset.get('ann_file'), num_images=args.det_num_images, seed=None,
             images=[]),
        {f'speed/{k}': result[k] for k in keys},
        dict(calibration_s=result['calibration_s'], reconstruction_s=None,
             evaluation_s=result['inference_quant_s_per_image'] * args.det_eval_images),
        dict(benchmark='detection_fake_quant', size=args.det_size, repeats=args.det_repeats,
             threads=result['threads'], sites=result['sites'], eval_images=args.det_eval_images))
    store.append(record)
    return record


def bench_processes(args, store) -> dict:
    """quant_test of the config with each process count through the launcher; times from wall clock and records."""
    from quant_hooks.runs import build_run_config, repo_path, run_distributed
    checkpoint = repo_path(args.checkpoint)
    metrics, runs = {}, {}
    for n in args.nprocs:
        cfg = build_run_config(args.config, {'results_extra': dict(speed_suite=f'{n}proc')},
                               osp.join(args.work_dir, f'processes_{n}'))
        before = {r['run_id'] for r in store.records()}
        start = time.perf_counter()
        run_distributed(cfg, checkpoint, True, store.path, n)
        wall = time.perf_counter() - start
        new = [r for r in store.records() if r['run_id'] not in before]
        if len(new) != 1 or new[0]['world_size'] != n:
            raise RuntimeError(f'the {n}-process run stored {len(new)} records (expected one with world size {n})')
        run = runs[n] = new[0]
        t = run['timings']
        metrics.update({f'speed/wall_s_{n}proc': round(wall, 3), f'speed/calibration_s_{n}proc': t['calibration_s'],
                        f'speed/evaluation_s_{n}proc': t['evaluation_s'],
                        f'speed/eval_quant_over_float_{n}proc': _ratio(t.get('evaluation_quant_s'),
                                                                        t.get('evaluation_float_s'))})
    base = runs[args.nprocs[0]]['metrics']
    diffs = [abs(r['metrics'][ph][k] - base[ph][k]) for r in runs.values() for ph in base for k in base[ph]
             if isinstance(base[ph][k], (int, float)) and k in r['metrics'].get(ph, {})
             and abs(base[ph][k]) != float('inf')]
    metrics['speed/max_metric_diff'] = max(diffs, default=0.0)
    first = runs[args.nprocs[0]]
    record = speed_record(cfg, f'{first["model"]} processes', first['method'], first['adapter'],
                          first['calibration'], metrics,
                          dict(calibration_s=first['timings']['calibration_s'], reconstruction_s=None,
                               evaluation_s=first['timings']['evaluation_s']),
                          dict(benchmark='processes', nprocs=list(args.nprocs),
                               runs={str(n): r['run_id'] for n, r in runs.items()}), checkpoint)
    store.append(record)
    return record


def _ratio(a, b):
    return round(a / b, 4) if a is not None and b else None


def main(argv=None) -> list[dict]:
    from quant_hooks.results import ResultStore
    args = parse_args(argv)
    out = []
    with ResultStore(args.store) as store:
        for name in args.benchmarks:
            record = dict(detection=bench_detection, processes=bench_processes)[name](args, store)
            print(f'{name}: ' + ', '.join(f'{k.split("/", 1)[1]}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                                          for k, v in record['metrics']['quant'].items()), flush=True)
            out.append(record)
    print(f'stored {len(out)} speed records in {args.store}')
    return out


if __name__ == '__main__':
    main()
