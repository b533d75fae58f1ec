"""Forward cost of every registered quantizer on ViT-B-sized activations, as ratios measured in one run.

For each activation shape (default ``64×197×768`` and ``64×197×3072``) every quantizer is calibrated on a slice
of a realistic input (post-LN-like values with outlier channels, their GELU, or a softmax, by the quantizer's
role) and its fake-quant forward is timed on the whole tensor under ``torch.no_grad``. Times are reported as
ratios to a plain ``x * 1.0`` pass and to the per-tensor uniform quantizer, measured interleaved in the same run
(best of ``--repeats`` interleaved rounds). It also times a percentile range calibration on a 100M-element tensor,
and the exact calibration of every quantizer with a search (every value scored, as many passes over the data as
the search needs) on the first activation shape observed as one tensor per image (batch size 1).

Usage::

    python benchmarks/bench_quantizers.py [--small] [--batch N] [--repeats 5] [--json out.json] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from quant_hooks.quantizers import build_quantizer, calibrate  # noqa: E402

#: name -> (config, input kind); input kinds: ln (post-LayerNorm), gelu, softmax (probabilities), logits
CASES = {
    'uniform/per_tensor': (dict(type='uniform', bits=4), 'ln'),
    'uniform/per_channel': (dict(type='uniform', bits=4, granularity='per_channel'), 'ln'),
    'uniform/per_token_dynamic': (dict(type='uniform', bits=4, granularity='per_token'), 'ln'),
    'uniform/per_token_static': (dict(type='uniform', bits=4, granularity='per_token_static'), 'ln'),
    'uniform/percentile': (dict(type='uniform', bits=4, range_method='percentile'), 'ln'),
    'uniform/mse (OMSE)': (dict(type='uniform', bits=4, range_method='mse'), 'ln'),
    'uniform/per_channel_percentile': (dict(type='uniform', bits=4, granularity='per_channel',
                                            range_method='percentile'), 'ln'),
    'ppoq/dynamic': (dict(type='ppoq', bits=4, threshold=5.0), 'ln'),
    'ppoq/static': (dict(type='ppoq', bits=4, threshold=5.0, granularity='per_token_static'), 'ln'),
    'ppoq/static_percentile': (dict(type='ppoq', bits=4, threshold=5.0, granularity='per_token_static',
                                    range_method='percentile'), 'ln'),
    'shift_log2/paper_calibrated': (dict(type='shift_log2', bits=4), 'gelu'),
    'shift_log2/code_current': (dict(type='shift_log2', bits=4, form='code', shift='current'), 'gelu'),
    'shift_log2/code_const': (dict(type='shift_log2', bits=4, form='code', shift=-0.17), 'gelu'),
    'log2': (dict(type='log2', bits=4), 'softmax'),
    'log_sqrt2': (dict(type='log_sqrt2', bits=4), 'softmax'),
    'twin_softmax': (dict(type='twin_softmax', bits=4), 'softmax'),
    'twin_gelu': (dict(type='twin_gelu', bits=4), 'gelu'),
    'ptf': (dict(type='ptf', bits=4), 'ln'),
    'log_int_softmax': (dict(type='log_int_softmax', bits=4), 'logits'),
    'noisy(uniform)': (dict(type='noisy', quantizer=dict(type='uniform', bits=4)), 'ln'),
    'qhyvit': (dict(type='qhyvit', bits=4), 'ln'),
    'qhyvit/mse': (dict(type='qhyvit', bits=4, range_method='mse'), 'ln'),
    'adaround/hard (on the tensor as a weight)': (dict(type='adaround', bits=4), 'ln'),
}
#: the ≤ 3x-uniform targets of the issue
TARGETS = ('ppoq/dynamic', 'ppoq/static', 'shift_log2/paper_calibrated', 'shift_log2/code_current')


def make_inputs(shape, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    c = shape[-1]
    outlier_ch = torch.randperm(c, generator=gen)[:max(1, c // 100)]
    x[..., outlier_ch] *= 20.0  # LayerNorm outlier channels
    x = x.to(device)
    return dict(ln=x, gelu=F.gelu(x), softmax=torch.softmax(x, dim=-1), logits=x)


def timed(fn, x, sync):
    sync()
    t0 = time.perf_counter()
    out = fn(x)
    sync()
    del out
    return time.perf_counter() - t0


@torch.no_grad()
def bench_shape(shape, repeats, device):
    """Best-of-``repeats`` time of every quantizer, of ``x * 1.0`` and of per-tensor uniform, taken in
    interleaved rounds so that background load hits all of them alike."""
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    inputs = make_inputs(shape, device)
    quantizers = {}
    for name, (cfg, kind) in CASES.items():
        q = build_quantizer(cfg).to(device)
        if cfg['type'] == 'adaround':  # a weight quantizer: its rounding variables have the tensor's shape
            calibrate(q, inputs[kind])
            q.set_mode('hard')
        else:
            calibrate(q, inputs[kind][:max(1, shape[0] // 8)])
        quantizers[name] = (q, kind)
    base = {kind: [] for kind in inputs}
    times = {name: [] for name in quantizers}
    for _ in range(repeats + 1):  # the first round warms up the allocator and is dropped
        for kind, x in inputs.items():
            base[kind].append(timed(lambda t: t * 1.0, x, sync))
        for name, (q, kind) in quantizers.items():
            times[name].append(timed(q, inputs[kind], sync))
    best = {k: min(v[1:]) for k, v in {**base, **times}.items()}
    t_uni = best['uniform/per_tensor']
    return {name: dict(ms=best[name] * 1e3, vs_mul=best[name] / best[kind], vs_uniform=best[name] / t_uni,
                       input=kind) for name, (q, kind) in quantizers.items()}


@torch.no_grad()
def bench_percentile(numel, device):
    x = torch.randn(numel, generator=torch.Generator().manual_seed(1)).to(device)
    out = {}
    for name, cfg in (('uniform/percentile', dict(type='uniform', bits=8, range_method='percentile')),
                      ('log_sqrt2/percentile', dict(type='log_sqrt2', bits=4))):
        q = build_quantizer(cfg).to(device)
        t0 = time.perf_counter()
        calibrate(q, x.abs() if name.startswith('log') else x)
        out[name] = time.perf_counter() - t0
    return out


@torch.no_grad()
def bench_calibration(shape, device):
    """Seconds of the exact calibration of every quantizer that searches, on ``shape`` observed image by image."""
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    inputs = make_inputs(shape, device)
    out = {}
    for name, (cfg, kind) in CASES.items():
        q = build_quantizer(cfg).to(device)
        if not q.requires_calibration or cfg['type'] == 'adaround':
            continue
        parts = inputs[kind].split(1)
        sync()
        t0 = time.perf_counter()
        calibrate(q, *parts)
        sync()
        info = q.describe()
        info = info.get('inner') or info.get('logits') or info
        out[name] = dict(seconds=time.perf_counter() - t0, passes=info.get('passes', 1),
                         exact=info.get('exact', True), range_method=info.get('range_method', '-'))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--small', action='store_true', help='8×197×768 and 8×197×3072, 10M-element percentile')
    parser.add_argument('--batch', type=int, default=None, help='images per activation tensor (overrides --small)')
    parser.add_argument('--percentile-numel', type=int, default=None, help='size of the percentile tensor')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (8 if args.small else 64)
    shapes = [(batch, 197, 768), (batch, 197, 3072)]
    numel = args.percentile_numel or (10_000_000 if args.small else 100_000_000)
    result = dict(device=args.device, threads=torch.get_num_threads(), torch=torch.__version__, shapes={},
                  percentile_calibration_s={}, percentile_numel=numel, calibration={})
    for shape in shapes:
        key = '×'.join(map(str, shape))
        rows = bench_shape(shape, args.repeats, args.device)
        result['shapes'][key] = rows
        print(f'\n## {key} (device {args.device}, {torch.get_num_threads()} threads, best of {args.repeats})')
        print(f'| {"quantizer":42s} | {"ms":>9s} | {"vs x*1.0":>9s} | {"vs uniform":>10s} |')
        print(f'|{"-" * 44}|{"-" * 11}|{"-" * 11}|{"-" * 12}|')
        for name, r in rows.items():
            flag = ' (target <= 3)' if name in TARGETS else ''
            print(f'| {name:42s} | {r["ms"]:9.1f} | {r["vs_mul"]:9.2f} | {r["vs_uniform"]:10.2f} |{flag}')
    pct = bench_percentile(numel, args.device)
    result['percentile_calibration_s'] = pct
    print(f'\n## percentile calibration on a {numel:,}-element tensor (observe + freeze)')
    for name, t in pct.items():
        print(f'| {name:30s} | {t:8.2f} s |')
    key = '×'.join(map(str, shapes[0]))
    cal = bench_calibration(shapes[0], args.device)
    result['calibration'] = {key: cal}
    print(f'\n## exact calibration on {key}, one tensor per image (observe every pass + freeze)')
    print(f'| {"quantizer":42s} | {"s":>8s} | passes | {"range method":16s} | exact |')
    for name, r in cal.items():
        print(f'| {name:42s} | {r["seconds"]:8.2f} | {r["passes"]:6d} | {r["range_method"]:16s} | {r["exact"]} |')
    slow = [n for n in TARGETS for rows in result['shapes'].values() if rows[n]['vs_uniform'] > 3.0]
    result['targets_within_3x_uniform'] = not slow
    print(f'\ntargets within 3x of per-tensor uniform: {"yes" if not slow else "NO: " + ", ".join(sorted(set(slow)))}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
