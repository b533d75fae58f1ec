"""The evaluation path of the detection configs gives AP 1.0 when the ground truth is fed back as detections."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from pycocotools.coco import COCO

from e2e_helpers import SWIN_TINY_CONFIG


def _gt_as_predictions(ann_file):
    coco = COCO(str(ann_file))
    cat_ids = sorted(coco.getCatIds())
    samples = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        h, w = info['height'], info['width']
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id)) if not a.get('iscrowd', 0)]
        boxes = torch.tensor([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        masks = np.stack([coco.annToMask(a) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
        samples.append(dict(img_id=img_id, ori_shape=(h, w), pred_instances=dict(
            bboxes=boxes, scores=torch.ones(len(anns)), labels=torch.tensor([cat_ids.index(a['category_id'])
                                                                             for a in anns], dtype=torch.long),
            masks=torch.from_numpy(masks).bool())))
    return samples


def test_ground_truth_fed_back_gives_ap_one(coco_tiny):
    from quant_hooks.apis import load_config
    from mmengine.evaluator import Evaluator
    cfg = load_config(str(SWIN_TINY_CONFIG))
    init_default_scope('mmdet')
    evaluator = Evaluator(cfg.test_evaluator)
    metric = evaluator.metrics[0]
    assert type(metric).__name__ == 'CocoMetric'
    from mmdet.datasets import CocoDataset
    metric.dataset_meta = CocoDataset.METAINFO  # what the runner hands over from the test dataset
    samples = _gt_as_predictions(cfg.test_evaluator.ann_file)
    evaluator.process(samples)
    results = evaluator.evaluate(len(samples))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)
