"""Cost of reconstruction per unit: time per iteration against one float forward + backward of the unit alone,
and peak memory (record cache and process RSS). CPU by default.

    python benchmarks/bench_reconstruction.py vit_s [--batch 32] [--size 224] [--iters 20] [--units ...]
    python benchmarks/bench_reconstruction.py swin_mask_rcnn [--size 1333 800] [--iters 5] [--units ...]
    python benchmarks/bench_reconstruction.py swin_mask_rcnn --method ADFQViT --all-units --iters 5   # full run

``vit_s``: timm ViT-S/14 (DINOv2 architecture; the trained weights from ../shared when present, else random) on
one calibration batch of ``--batch`` images (real ImageNet images from ../shared when present). ``swin_mask_rcnn``:
mmdet's Mask R-CNN Swin-T backbone (random weights) on one COCO image at its test resolution (1333x800 keeps the
aspect ratio of the image, as the test pipeline does). W4/A4 MinMax calibration, then reconstruction of the chosen
units (default: the attention and MLP modules of the first block, and the first block as a whole).

The reference is one float forward and backward of the unit alone on the same input (weights and input
requiring gradients, as a training step). An iteration of the engine runs the quantized unit once forward and
once backward on cached inputs, so the ratio should be about 1 plus the cost of fake quantization (AdaRound's
soft rounding of the weights and the activation quantizers), independent of the depth of the unit in the network.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import statistics
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = osp.join(osp.dirname(ROOT), 'shared', 'data')
VIT_WEIGHTS = osp.join(SHARED, 'weights', 'vit_small_patch14_dinov2.imgfocus.safetensors')
VIT_IMAGES = osp.join(SHARED, 'imagenet_val_subset', 'images')
SWIN_CONFIG = osp.join(ROOT, 'configs/detection/mask_rcnn_swin_t_1x_coco_tiny_minmax_w8a8.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model', choices=['vit_s', 'swin_mask_rcnn'])
    p.add_argument('--batch', type=int, default=32, help='images per calibration batch (vit_s)')
    p.add_argument('--size', type=int, nargs='+', default=None,
                   help='vit_s: side (default 224); swin_mask_rcnn: test scale W H (default 1333 800)')
    p.add_argument('--iters', type=int, default=None, help='iterations per unit (default 20 vit_s, 5 swin)')
    p.add_argument('--units', nargs='+', default=None, help='unit module names')
    p.add_argument('--bits', type=int, default=4)
    p.add_argument('--method', default='MinMax', help='recipe (MinMax, QDrop, ADFQViT, ...)')
    p.add_argument('--all-units', action='store_true',
                   help="the recipe's own units (the whole model) instead of --units; no fwd+bwd reference")
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--json', help='also write the results here')
    return p.parse_args(argv)


def _vit_images(n, size):
    if not osp.isdir(VIT_IMAGES):
        return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0)), 'random'
    from PIL import Image
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    files = sorted(f for f in __import__('os').listdir(VIT_IMAGES) if f.lower().endswith(('.jpeg', '.jpg', '.png')))
    out = []
    for f in files[:n]:
        img = Image.open(osp.join(VIT_IMAGES, f)).convert('RGB').resize((size, size), Image.BICUBIC)
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
        out.append((t.permute(2, 0, 1).float() / 255 - mean) / std)
    return torch.stack(out), 'ImageNet val (../shared)'


def build_vit(args):
    import timm

    from quant_hooks.adapters import TimmViTAdapter, run_batches
    size = (args.size or [224])[0]
    from quant_hooks.models import disable_fused_attention
    model = timm.create_model('vit_small_patch14_dinov2', num_classes=0, pretrained=False, dynamic_img_size=True)
    disable_fused_attention(model)  # the float path of TimmClassifier (and of the reference below): explicit attention
    weights = 'random'
    if osp.isfile(VIT_WEIGHTS):
        from safetensors.torch import load_file
        model.load_state_dict(load_file(VIT_WEIGHTS), strict=True)
        weights = VIT_WEIGHTS
    model.eval()
    images, source = _vit_images(args.batch, size)
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    units = args.units or ['blocks.0.attn', 'blocks.0.mlp', 'blocks.0']
    info = dict(model='vit_small_patch14_dinov2', weights=weights, images=source, batch=args.batch,
                input=[size, size])
    return model, sites, units, (lambda: run_batches(adapter, model, [images])), (lambda: model(images)), info


def build_swin(args):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, MODELS, init_default_scope

    from quant_hooks.adapters import MMDetSwinAdapter, run_batches
    from quant_hooks.apis import load_config
    scale = tuple(args.size or (1333, 800))
    cfg = load_config(SWIN_CONFIG)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    pipeline = [dict(t, scale=scale, keep_ratio=True) if t['type'] == 'Resize' else t
                for t in cfg.test_dataloader.dataset.pipeline]
    dataset = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=pipeline))
    batch = pseudo_collate([dataset[0]])
    adapter = MMDetSwinAdapter(scope='backbone')
    sites = adapter.prepare(model)
    units = args.units or ['backbone.stages.0.blocks.0.attn', 'backbone.stages.0.blocks.0.ffn',
                           'backbone.stages.0.blocks.0', 'backbone.stages.2.blocks.0']
    inputs = model.data_preprocessor(batch, False)['inputs']
    info = dict(model='Mask R-CNN Swin-T backbone (random weights)', batch=1, input=list(inputs.shape[-2:]))
    return model, sites, units, (lambda: run_batches(adapter, model, [batch])), (lambda: model.backbone(inputs)), info


def float_fwd_bwd(model, units, forward, repeats=3) -> dict[str, float]:
    """Median seconds of one float forward + backward of each unit alone, on its input in the float model."""
    captured = {}
    handles = [model.get_submodule(u).register_forward_pre_hook(
        lambda m, a, k, u=u: captured.__setitem__(u, (a, k)), with_kwargs=True) for u in units]
    with torch.no_grad():
        forward()
    for h in handles:
        h.remove()
    out = {}
    for u in units:
        module = model.get_submodule(u)
        args, kwargs = captured[u]
        times = []
        for _ in range(repeats + 1):
            args_g = tuple(a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a
                           for a in args)
            start = time.perf_counter()
            y = module(*args_g, **kwargs)
            y = y[0] if isinstance(y, tuple) else y
            y.float().square().mean().backward()
            times.append(time.perf_counter() - start)
        module.zero_grad(set_to_none=True)
        out[u] = statistics.median(times[1:])
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import quant_hooks.methods  # noqa: F401  (registers the recipes)
    from quant_hooks.registry import QUANT_METHODS
    build = build_vit if args.model == 'vit_s' else build_swin
    model, sites, units, run_calibration, forward, info = build(args)
    iters = args.iters or (20 if args.model == 'vit_s' else 5)
    reference = {} if args.all_units else float_fwd_bwd(model, units, forward)
    recon = dict(iters=iters, progress=True, eval_error=False)
    if not args.all_units:
        recon.update(unit='module', units=units)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        method = QUANT_METHODS.build(dict(type=args.method, w_bits=args.bits, a_bits=args.bits,
                                          reconstruction=recon))
    start = time.perf_counter()
    summary = method.run(model, sites, run_calibration)['reconstruction']
    total = time.perf_counter() - start
    rows = []
    for u in summary['units']:
        if 'skipped' in u:
            continue
        ref = reference.get(u['name'])
        rows.append(dict(unit=u['name'], iters=u['iters'], s_per_iter=u['seconds_per_iter'],
                         float_fwd_bwd_s=None if ref is None else round(ref, 6),
                         ratio=None if ref is None else round(u['seconds_per_iter'] / ref, 2),
                         capture_s=u['capture_seconds'], cache_peak_mb=round(u['cache_peak_bytes'] / 2**20, 2)))
    result = dict(info, method=args.method, bits=args.bits, threads=torch.get_num_threads(), units=rows,
                  total_s=round(total, 2), reconstruction_s=summary['seconds'], peak_rss_mb=summary['peak_rss_mb'])
    print(f"{info['model']}: input {info['input']}, batch {info['batch']}, {args.method} W{args.bits}/A{args.bits}, "
          f"{iters} steps per unit, {torch.get_num_threads()} threads")
    print(f"{'unit':40s} {'s/iter':>9s} {'fwd+bwd s':>10s} {'ratio':>6s} {'capture s':>10s} {'cache MiB':>10s}")
    for r in rows:
        ref = '-' if r['ratio'] is None else f"{r['float_fwd_bwd_s']:.4f}"
        ratio = '-' if r['ratio'] is None else f"{r['ratio']:.2f}"
        print(f"{r['unit']:40s} {r['s_per_iter']:9.4f} {ref:>10s} {ratio:>6s} {r['capture_s']:10.2f} "
              f"{r['cache_peak_mb']:10.1f}")
    print(f"total {total:.1f}s (calibration + reconstruction; reconstruction {summary['seconds']:.1f}s), "
          f"peak RSS {summary['peak_rss_mb']:.0f} MiB")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
