"""Feature fidelity of a quantized real ViT against its float self, on labelled images.

    python benchmarks/fidelity_real_vit.py --weights vit_small_patch14_dinov2.imgfocus.safetensors \\
        --images IMAGENET_SUBSET/images --labels IMAGENET_SUBSET/labels.txt \\
        --method MinMax --w-bits 8 --a-bits 8 --work-dir work_dirs/fidelity/minmax_w8a8

Runs the project's own path (TimmClassifier, TimmViTAdapter, the PTQ method, PTQHook's calibration) through
``run_quant_test`` on ``configs/fidelity/vit_s14_dinov2_features_minmax_w8a8.py``: a float pass, then a
quantized pass, compared by the ``FeatureFidelity`` metric (SQNR of the final features in dB, mean / min cosine
similarity per image, leave-one-out 1-NN label accuracy with float and quantized features, and how often the
two agree). Calibration images are drawn (seeded) from the labelled images and left out of the evaluated ones.
Writes WORK_DIR/quant_results.json in quant_test's layout (metrics.float / metrics.quant, method, calibration,
sites) plus a ``benchmark`` entry with this run's settings.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = osp.join(ROOT, 'configs', 'fidelity', 'vit_s14_dinov2_features_minmax_w8a8.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Feature fidelity of a quantized real ViT (float vs quantized)')
    parser.add_argument('--weights', required=True, help='timm state dict (.safetensors / .pth) of the model')
    parser.add_argument('--images', required=True, help='folder of the images named in --labels')
    parser.add_argument('--labels', required=True, help='"FILE LABEL" list of the images')
    parser.add_argument('--method', default='MinMax', help='PTQ method (a registered name: MinMax, Percentile...)')
    parser.add_argument('--w-bits', type=int, default=8)
    parser.add_argument('--a-bits', type=int, default=8)
    parser.add_argument('--num-calib', type=int, default=32, help='calibration images (seeded, not evaluated)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the calibration choice')
    parser.add_argument('--max-images', type=int, default=None,
                        help='evaluate only the first N of the remaining images (quick runs)')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--config', default=CONFIG, help='the fidelity config (model, pipeline, metric)')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='further config overrides (key=value), e.g. quant_method.float_roles=[post_ln]')
    return parser.parse_args(argv)


def build_config(args):
    """The fidelity config with this run's paths, method, bits and disjoint calibration / evaluation images."""
    from mmengine.config import DictAction
    from mmengine.registry import DATASETS, DefaultScope

    from quant_hooks.apis import load_config
    from quant_hooks.calibration import CalibrationConfig, select_indices

    for flag, path, isdir in (('--weights', args.weights, False), ('--images', args.images, True),
                              ('--labels', args.labels, False)):
        if not (osp.isdir(path) if isdir else osp.isfile(path)):
            raise FileNotFoundError(f'{flag} {path!r} does not exist')
    options = None
    if args.cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        options = parser.parse_args(['--o', *args.cfg_options]).o
    cfg = load_config(args.config, None, args.work_dir)
    data = dict(data_root='', ann_file=osp.abspath(args.labels), data_prefix=dict(img_path=osp.abspath(args.images)))
    cfg.test_dataloader.dataset.update(data)
    cfg.test_dataloader.batch_size = args.batch_size
    cfg.quant_calibration.dataset.update(data)
    cfg.quant_calibration.update(num_images=args.num_calib, seed=args.seed, protocol='seeded',
                                 batch_size=args.batch_size)
    cfg.quant_method = dict(type=args.method, w_bits=args.w_bits, a_bits=args.a_bits)
    if options:  # after the settings above, so that e.g. quant_method.float_roles=[post_ln] adds to them
        cfg.merge_from_dict(options)

    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        dataset = DATASETS.build(dict(cfg.quant_calibration.dataset, pipeline=[]))
    calib = select_indices(len(dataset), CalibrationConfig(**cfg.quant_calibration))
    evaluated = [i for i in range(len(dataset)) if i not in set(calib)][:args.max_images]
    if len(evaluated) < 2:
        raise ValueError(f'only {len(evaluated)} images are left to evaluate after {len(calib)} calibration images: '
                         'give more labelled images or lower --num-calib')
    cfg.test_dataloader.dataset.indices = evaluated
    return cfg, dict(weights=osp.abspath(args.weights), images=osp.abspath(args.images),
                     labels=osp.abspath(args.labels), num_labelled=len(dataset), num_evaluated=len(evaluated),
                     calibration_indices=calib, calibration_disjoint=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from quant_hooks.apis import format_comparison, run_quant_test
    from quant_hooks.evaluation import write_json_atomic

    cfg, bench = build_config(args)
    record = run_quant_test(cfg, args.weights)
    record['benchmark'] = dict(bench, script='benchmarks/fidelity_real_vit.py')
    path = osp.join(cfg.work_dir, 'quant_results.json')
    write_json_atomic(path, record)
    print(format_comparison(record))
    print(f'results: {path}')
    return record


if __name__ == '__main__':
    main()
