"""tools/quant_test.py end to end on the Cascade Mask R-CNN Swin-T and ViTDet configs: 2 real COCO images at
320x320, random weights, float and quantized COCO bbox / segm evaluation."""
from __future__ import annotations

import json

import pytest
from mmengine.config import Config

from tests.detection_helpers import REPO
from tools.quant_test import main

CONFIGS = ('cascade_mask_rcnn_swin_t_3x_coco_tiny_minmax_w8a8.py', 'vitdet_mask_rcnn_vit_tiny_coco_tiny_minmax_w8a8.py')


@pytest.fixture(scope='module')
def two_image_annotations(tmp_path_factory, coco_tiny):
    coco = json.loads((coco_tiny / 'annotations' / 'instances_val.json').read_text())
    images = coco['images'][:2]
    ids = {im['id'] for im in images}
    coco.update(images=images, annotations=[a for a in coco['annotations'] if a['image_id'] in ids])
    path = tmp_path_factory.mktemp('coco') / 'instances_val_2.json'
    path.write_text(json.dumps(coco))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS)
def test_quant_test_runs_end_to_end(config, two_image_annotations, tmp_path):
    path = str(REPO / 'configs' / 'detection' / config)
    pipeline = Config.fromfile(path).test_dataloader.dataset.pipeline
    resize = [i for i, t in enumerate(pipeline) if t['type'] == 'Resize']
    assert len(resize) == 1
    options = [f'test_dataloader.dataset.ann_file={two_image_annotations}',
               f'test_evaluator.ann_file={two_image_annotations}',
               f'test_dataloader.dataset.pipeline.{resize[0]}.scale=(320,320)',
               'quant_calibration.num_images=2',
               # random weights: keep every box (scores are near 1/81) so that bbox and segm AP are computed
               'model.test_cfg.rcnn.score_thr=0.0', 'model.test_cfg.rcnn.max_per_img=20',
               'model.test_cfg.rpn.nms_pre=300', 'model.test_cfg.rpn.max_per_img=100']
    record = main([path, '--work-dir', str(tmp_path), '--cfg-options', *options])
    for phase in ('float', 'quant'):
        metrics = record['metrics'][phase]
        for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
            assert 0.0 <= metrics[key] <= 1.0, (phase, key, metrics)
    # backbone scope: 12 blocks x 7 sites (qkv, proj, fc1, fc2, 2 matmuls, softmax logits) + the patch embedding
    # (+ 3 patch merges for Swin)
    assert record['num_sites'] == 12 * 7 + 1 + (3 if config.startswith('cascade') else 0)
    assert record['calibration']['num_images'] == 2
    saved = json.loads((tmp_path / 'quant_results.json').read_text())
    assert saved['metrics']['quant']['coco/segm_mAP'] == record['metrics']['quant']['coco/segm_mAP']
    assert (tmp_path / 'quant_state.pth').is_file()
