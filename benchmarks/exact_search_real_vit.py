"""Range searches on real ViT-S/14 tensors: SQNR of each quantizer calibrated and evaluated on the same tensor.

Captures block ``--block`` of the trained ViT-S/14 (``../shared/data/weights``) on the first ``--images`` ImageNet
val images (``../shared/data/imagenet_val_subset``): the fc1 input (post-LN), the fc2 input (post-GELU), the
attention probabilities (softmax of the scaled q@kᵀ) and the qkv weight. Each quantizer observes the images one
by one (batch size 1) and the SQNR of x̂ vs x on the same tensor is reported, with what its search did.

``--root`` imports the quantizers from another checkout (e.g. an older commit, to compare before / after)::

    python benchmarks/exact_search_real_vit.py [--images 16] [--block 6] [--root /path/to/checkout] [--json out]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parents[1]
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

#: name -> (config, tensor); the tensors: ln (fc1 input), gelu (fc2 input), softmax, qkv_w (qkv weight)
CASES = {
    'ptf W4 (post-LN)': (dict(type='ptf', bits=4), 'ln'),
    'ptf W8 (post-LN)': (dict(type='ptf', bits=8), 'ln'),
    'uniform percentile W4 (post-LN)': (dict(type='uniform', bits=4, range_method='percentile'), 'ln'),
    'ppoq static percentile W4 a=5 (post-LN)': (dict(type='ppoq', bits=4, threshold=5.0,
                                                     granularity='per_token_static', range_method='percentile'),
                                                'ln'),
    'log_sqrt2 W4 (softmax)': (dict(type='log_sqrt2', bits=4), 'softmax'),
    'log2 W4 (softmax)': (dict(type='log2', bits=4), 'softmax'),
    'twin_softmax W4 (softmax)': (dict(type='twin_softmax', bits=4), 'softmax'),
    'uniform percentile W4 (post-GELU)': (dict(type='uniform', bits=4, range_method='percentile'), 'gelu'),
    'shift_log2 code W4 (post-GELU)': (dict(type='shift_log2', bits=4, form='code', shift='current'), 'gelu'),
    'twin_gelu W4 (post-GELU)': (dict(type='twin_gelu', bits=4), 'gelu'),
    'qhyvit mse W4 (post-GELU)': (dict(type='qhyvit', bits=4, range_method='mse'), 'gelu'),
    'uniform OMSE per-channel W4 (qkv weight)': (dict(type='uniform', bits=4, range_method='mse',
                                                      granularity=dict(type='per_channel', axis=0)), 'qkv_w'),
}


def load_images(folder: Path, count: int) -> torch.Tensor:
    from PIL import Image
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in ('.jpeg', '.jpg', '.png'))[:count]
    out = []
    for f in files:
        img = Image.open(f).convert('RGB').resize((224, 224), Image.BICUBIC)
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(224, 224, 3)
        out.append((t.permute(2, 0, 1).float() / 255 - MEAN) / STD)
    return torch.stack(out)


@torch.no_grad()
def capture(shared: Path, count: int, block: int) -> dict[str, torch.Tensor]:
    import timm
    from safetensors.torch import load_file
    model = timm.create_model('vit_small_patch14_dinov2', num_classes=0, pretrained=False, dynamic_img_size=True)
    model.load_state_dict(load_file(str(shared / 'data/weights/vit_small_patch14_dinov2.imgfocus.safetensors')))
    model.eval()
    blk = model.blocks[block]
    got = {}
    hooks = [blk.mlp.fc1.register_forward_pre_hook(lambda m, i: got.__setitem__('ln', i[0])),
             blk.mlp.fc2.register_forward_pre_hook(lambda m, i: got.__setitem__('gelu', i[0])),
             blk.attn.qkv.register_forward_hook(lambda m, i, o: got.__setitem__('qkv', o))]
    model(load_images(shared / 'data/imagenet_val_subset/images', count))
    for h in hooks:
        h.remove()
    attn = blk.attn
    b, n, _ = got['qkv'].shape
    qkv = got.pop('qkv').reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    got['softmax'] = torch.softmax(q * attn.scale @ k.transpose(-2, -1), dim=-1)
    got['qkv_w'] = attn.qkv.weight.detach().clone()
    return got


def calibrate(quantizers_pkg, q, tensors):
    """The checkout's own calibration: ``calibrate`` (every pass) where it exists, else observe + freeze."""
    if hasattr(quantizers_pkg, 'calibrate'):
        return quantizers_pkg.calibrate(q, *tensors)
    q.observing = True
    for t in tensors:
        q(t)
    q.freeze()
    return q


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=16)
    parser.add_argument('--block', type=int, default=6)
    parser.add_argument('--shared', default=str(HERE.parent / 'shared'))
    parser.add_argument('--root', default=str(HERE), help='checkout whose quant_hooks.quantizers is measured')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.root))
    import quant_hooks.quantizers as qz
    tensors = capture(Path(args.shared), args.images, args.block)
    rows = {}
    for name, (cfg, kind) in CASES.items():
        x = tensors[kind]
        parts = [x] if kind == 'qkv_w' else list(x.split(1))
        try:
            q = qz.build_quantizer(cfg)
        except Exception as e:  # an option the checkout does not know
            print(f'| {name:44s} | skipped: {e}')
            continue
        t0 = time.perf_counter()
        calibrate(qz, q, parts)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            err = (q(x) - x).double().square().mean()
        sqnr = float(10 * torch.log10(x.double().square().mean() / err))
        info = q.describe() if hasattr(q, 'describe') else {}
        extra = {k: info[k] for k in ('percentile', 'alpha', 'factor_counts', 'split_exponent', 'passes')
                 if k in info}
        if 'choice' in info:
            extra['choice'] = f'{info["choice"]["granularity"]}/{info["choice"]["scheme"]}'
        if name.startswith('ptf') and not extra:
            extra['factor_counts'] = torch.bincount(q.alpha.flatten(), minlength=4).tolist()
        rows[name] = dict(sqnr_db=round(sqnr, 2), calibration_s=round(seconds, 2), **extra)
        print(f'| {name:44s} | {sqnr:7.2f} dB | {seconds:6.2f} s | {extra}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(root=args.root, images=args.images, block=args.block, rows=rows), f, indent=2)
    return rows


if __name__ == '__main__':
    main()
