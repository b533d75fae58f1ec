"""Train one of the default detectors on the shapes dataset with mmdet's own loop, export and evaluate its weights.

    python tools/train_default.py configs/train/vitdet_mask_rcnn_vit_s14_shapes.py [--work-dir DIR]
                                  [--out-dir checkpoints/NAME] [--max-iters N] [--export-only CKPT] [--fp32]

1. writes the shapes train split (tools/make_shapes_dataset.py, seed 0) when it is absent;
2. trains with ``mmengine.runner.Runner.train`` (the config's seed, schedule and frozen parts);
3. exports the trained weights to OUT_DIR/weights.safetensors (half precision unless --fp32), leaving out the
   submodules that load their own pre-trained weights (a frozen pretrained backbone), and
4. evaluates the exported file on the val split and writes OUT_DIR/info.json (config, seed, iterations, training
   time, float box/mask AP).

``--export-only CKPT`` skips training and exports an mmengine checkpoint of the same config.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_IMAGES = 3000
DATA_SEED = 0


def ensure_train_split(cfg) -> None:
    """Write the train split the config reads when its annotation file is absent (deterministic)."""
    from quant_hooks.datasets.shapes import write_split
    ds = cfg.train_dataloader.dataset
    ann = osp.join(ds.data_root, ds.ann_file)
    if not osp.isfile(ann):
        print(f'writing the shapes train split ({TRAIN_IMAGES} images, seed {DATA_SEED}) under {ds.data_root}')
        write_split(ds.data_root, DATA_SEED, 'train', TRAIN_IMAGES)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='training config (configs/train/*.py)')
    parser.add_argument('--work-dir', help='mmengine work dir (default work_dirs/train/<config name>)')
    parser.add_argument('--out-dir', help='export folder (default checkpoints/<config name>)')
    parser.add_argument('--max-iters', type=int, help='override train_cfg.max_iters (and the LR step)')
    parser.add_argument('--export-only', metavar='CKPT', help='export this mmengine checkpoint instead of training')
    parser.add_argument('--fp32', action='store_true', help='export float32 instead of half precision')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config

    import quant_hooks.registry  # noqa: F401  (registers the project's modules)
    from quant_hooks.apis import build_runner
    from quant_hooks.utils.detector_weights import export_trained_weights, load_detector_weights

    name = osp.splitext(osp.basename(args.config))[0]
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir or osp.join(REPO, 'work_dirs', 'train', name)
    out_dir = args.out_dir or osp.join(REPO, 'checkpoints', name)
    if args.max_iters:
        cfg.train_cfg.max_iters = args.max_iters
        for sched in cfg.param_scheduler:
            if sched.get('type') == 'MultiStepLR':
                sched['milestones'] = [int(args.max_iters * 0.8)]
    train_time = None
    if args.export_only:
        from quant_hooks.utils.checkpoint import load_checkpoint
        runner = build_runner(cfg)
        meta = load_checkpoint(runner.model, args.export_only)
        iters = meta.get('iter')
    else:
        ensure_train_split(cfg)
        runner = build_runner(cfg)
        start = time.time()
        runner.train()
        train_time = time.time() - start
        iters = runner.iter
    weights = osp.join(out_dir, 'weights.safetensors')
    export_trained_weights(runner.model, weights, half=not args.fp32,
                           meta=dict(config=osp.relpath(osp.abspath(args.config), REPO), seed=cfg.randomness.seed))

    # evaluate the exported file as users load it: a fresh model, pretrained parts from their own files
    test_runner = build_runner(cfg.copy())
    load_detector_weights(test_runner.model, weights)
    metrics = test_runner.test()
    info = dict(config=osp.relpath(osp.abspath(args.config), REPO), seed=cfg.randomness.seed,
                data=dict(generator='tools/make_shapes_dataset.py', seed=DATA_SEED, train_images=TRAIN_IMAGES,
                          val_images=len(test_runner.test_dataloader.dataset)),
                max_iters=cfg.train_cfg.max_iters, trained_iters=iters, batch_size=cfg.train_dataloader.batch_size,
                train_time_s=None if train_time is None else round(train_time), precision='fp32' if args.fp32 else 'fp16',
                float_metrics={k: round(float(v), 4) for k, v in metrics.items()})
    with open(osp.join(out_dir, 'info.json'), 'w') as f:
        json.dump(info, f, indent=2)
        f.write('\n')
    print(json.dumps(info, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
