"""Feature SQNR of W/A-bit ADFQViT on the real ViT-S/14 (../shared) before and after its module-wise optimization.

    python benchmarks/recon_sqnr_real_vit.py [--iters 24] [--calib 32] [--held-out 8] [--size 56] [--bits 4]
                                             [--units patch_embed blocks.0.attn ...] [--threads 1]

Calibrates ADFQViT on the first ``--calib`` images of ../shared/data/imagenet_val_subset (batches of 4), measures
the held-out features (the next ``--held-out`` images) against the float model, reconstructs (every module, or
``--units``), and measures again. Prints one line and returns the numbers.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=24)
    p.add_argument('--calib', type=int, default=32)
    p.add_argument('--held-out', type=int, default=8)
    p.add_argument('--size', type=int, default=56)
    p.add_argument('--bits', type=int, default=4)
    p.add_argument('--units', nargs='+', default=None)
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import timm
    from bench_reconstruction import VIT_WEIGHTS, _vit_images
    from safetensors.torch import load_file

    from quant_hooks.adapters import TimmViTAdapter, run_batches
    from quant_hooks.evaluation.feature_fidelity import sqnr_db
    from quant_hooks.methods import ADFQViT, set_quant_enabled
    from quant_hooks.reconstruction import reconstruct

    model = timm.create_model('vit_small_patch14_dinov2', num_classes=0, pretrained=False, dynamic_img_size=True)
    model.load_state_dict(load_file(VIT_WEIGHTS), strict=True)
    model.eval()
    images, source = _vit_images(args.calib + args.held_out, args.size)
    calib, held = images[:args.calib], images[args.calib:]
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    recon = dict(iters=args.iters, progress=False)
    if args.units:
        recon['units'] = args.units
    method = ADFQViT(w_bits=args.bits, a_bits=args.bits, reconstruction=recon)
    run = lambda: run_batches(adapter, model, list(calib.split(4)))  # noqa: E731
    method.quantize(sites, run)

    @torch.no_grad()
    def features(quant):
        set_quant_enabled(sites, quant)
        out = model(held)
        set_quant_enabled(sites, True)
        return out

    ref = features(False)
    before = sqnr_db(ref, features(True))
    start = time.perf_counter()
    summary = reconstruct(model, sites, run, method.reconstruction)
    seconds = time.perf_counter() - start
    after = sqnr_db(ref, features(True))
    reverted = sum(u.get('reverted', False) for u in summary['units'])
    print(f'ADFQViT W{args.bits}/A{args.bits} {args.size}px, {args.calib} calibration / {args.held_out} held-out '
          f'images ({source}), {len(summary["units"])} units x {args.iters} steps: feature SQNR {before:.2f} -> '
          f'{after:.2f} dB, {reverted} reverted, {seconds:.0f} s')
    return dict(before=before, after=after, reverted=reverted, seconds=seconds)


if __name__ == '__main__':
    main()
