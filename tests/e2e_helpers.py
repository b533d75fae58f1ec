"""Helpers for end-to-end tests that run tools/quant_test.py in-process."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

REPO = Path(__file__).resolve().parents[1]
SWIN_TINY_CONFIG = REPO / 'configs/detection/mask_rcnn_swin_t_1x_coco_tiny_minmax_w8a8.py'

#: two test images at reduced resolution, two calibration images, no score threshold (random weights)
SMALL_DETECTION_OPTIONS = [
    'test_dataloader.dataset.indices=[0,1]',
    'test_dataloader.dataset.pipeline.1.scale=(512,320)',
    'quant_calibration.num_images=2',
    'model.test_cfg.rcnn.score_thr=0.0',
    'log_level=WARNING',
    'randomness.seed=0',
]


def load_quant_test_tool():
    """tools/quant_test.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('quant_test_tool', REPO / 'tools' / 'quant_test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(config, work_dir, checkpoint=None, options=(), extra=()):
    argv = [str(config)] + ([str(checkpoint)] if checkpoint else []) + ['--work-dir', str(work_dir)]
    argv += list(extra)
    if options:
        argv += ['--cfg-options', *options]
    record = load_quant_test_tool().main(argv)
    with open(Path(work_dir) / 'quant_results.json') as f:
        assert json.load(f)['metrics'] == record['metrics']
    return record


def cocoeval_stats(gt_file, det_file, iou_type, img_ids=None) -> np.ndarray:
    """The 12 COCOeval summary numbers of a detection JSON, computed directly with pycocotools."""
    gt = COCO(str(gt_file))
    with open(det_file) as f:
        dets = json.load(f)
    if not dets:
        return np.zeros(12)
    if iou_type == 'segm':
        for d in dets:
            d.pop('bbox', None)  # loadRes recomputes boxes from masks
    dt = gt.loadRes(dets)
    ev = COCOeval(gt, dt, iou_type)
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def pseudo_ground_truth(gt_file, bbox_json, segm_json, out_file, num=30):
    """A COCO annotation file whose objects are the ``num`` top-scoring detections of a run, across images.

    Every detection scoring above the last kept one is kept too, so the run's own detections score AP 1.0.
    """
    from pycocotools import mask as mask_util
    with open(gt_file) as f:
        src = json.load(f)
    with open(bbox_json) as f:
        boxes = json.load(f)
    with open(segm_json) as f:
        masks = json.load(f)
    anns = []
    for i in sorted(range(len(boxes)), key=lambda i: -boxes[i]['score'])[:num]:
        b, m = boxes[i], masks[i]
        assert b['image_id'] == m['image_id'] and b['category_id'] == m['category_id']
        rle = dict(size=m['segmentation']['size'], counts=m['segmentation']['counts'].encode())
        area = float(mask_util.area(rle))
        if area < 1 or b['bbox'][2] < 1 or b['bbox'][3] < 1:
            break  # a degenerate object cannot be matched: stop here so all higher-scoring ones stay GT
        anns.append(dict(id=len(anns) + 1, image_id=b['image_id'], category_id=b['category_id'], bbox=b['bbox'],
                         area=area, segmentation=m['segmentation'], iscrowd=0))
    kept = {a['image_id'] for a in anns}
    images = [im for im in src['images'] if im['id'] in kept]
    with open(out_file, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=src['categories']), f)
    return [im['id'] for im in images]
