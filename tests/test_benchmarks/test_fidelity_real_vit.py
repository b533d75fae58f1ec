"""benchmarks/fidelity_real_vit.py: disjoint calibration / evaluation split, and on the real ViT-S/14 (when
../shared is present) W8A8 MinMax keeps the features, W4A4 measurably does not."""
from __future__ import annotations

import json
import os.path as osp
import sys

import pytest

from tests.conftest import shared_path

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'benchmarks'))


def test_config_keeps_calibration_images_out_of_the_evaluation(tmp_path, imagenet_tiny):
    import fidelity_real_vit
    weights = tmp_path / 'w.safetensors'
    weights.write_bytes(b'')
    args = fidelity_real_vit.parse_args([
        '--weights', str(weights), '--images', str(imagenet_tiny / 'val'), '--labels', str(imagenet_tiny / 'val.txt'),
        '--num-calib', '5', '--method', 'Percentile', '--w-bits', '6', '--a-bits', '4', '--work-dir', str(tmp_path)])
    cfg, bench = fidelity_real_vit.build_config(args)
    evaluated = cfg.test_dataloader.dataset.indices
    assert len(evaluated) == 12 - 5 and not set(evaluated) & set(bench['calibration_indices'])
    assert cfg.quant_method == dict(type='Percentile', w_bits=6, a_bits=4)
    assert cfg.test_dataloader.dataset.ann_file == str(imagenet_tiny / 'val.txt')
    with pytest.raises(FileNotFoundError, match='--images'):
        fidelity_real_vit.build_config(fidelity_real_vit.parse_args([
            '--weights', str(weights), '--images', str(tmp_path / 'none'), '--labels', str(weights),
            '--work-dir', str(tmp_path)]))
    args.num_calib = 11
    with pytest.raises(ValueError, match='only 1 images are left'):
        fidelity_real_vit.build_config(args)


@pytest.mark.slow
def test_real_vit_s14_feature_fidelity(tmp_path):
    import fidelity_real_vit
    weights = shared_path('data/weights/vit_small_patch14_dinov2.imgfocus.safetensors')
    images = shared_path('data/imagenet_val_subset/images')
    labels = shared_path('data/imagenet_val_subset/labels.txt')
    quant = {}
    for bits in (8, 4):
        work = tmp_path / f'w{bits}'
        fidelity_real_vit.main(['--weights', str(weights), '--images', str(images), '--labels', str(labels),
                                '--w-bits', str(bits), '--a-bits', str(bits), '--num-calib', '8', '--max-images', '24',
                                '--batch-size', '8', '--work-dir', str(work)])
        record = json.load(open(work / 'quant_results.json'))
        assert record['checkpoint'] == str(weights) and record['benchmark']['num_evaluated'] == 24
        quant[bits] = record['metrics']['quant']
    assert quant[8]['feature/cosine_mean'] >= 0.99
    assert quant[4]['feature/cosine_mean'] < quant[8]['feature/cosine_mean'] - 0.05
    assert quant[4]['feature/sqnr_db'] < quant[8]['feature/sqnr_db'] - 6.0
