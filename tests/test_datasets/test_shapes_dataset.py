"""The synthetic shapes dataset: deterministic, valid COCO instance segmentation, committed splits reproducible."""
from __future__ import annotations

import json

import numpy as np
import pytest

from quant_hooks.datasets.shapes import CLASSES, render_image, write_split
from tools.make_shapes_dataset import parse_splits


def test_an_image_is_a_pure_function_of_seed_split_and_index():
    a_img, a_anns = render_image(0, 'val', 3)
    b_img, b_anns = render_image(0, 'val', 3)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img)) and a_anns == b_anns
    c_img, _ = render_image(0, 'train', 3)
    d_img, _ = render_image(1, 'val', 3)
    assert not np.array_equal(np.asarray(a_img), np.asarray(c_img))
    assert not np.array_equal(np.asarray(a_img), np.asarray(d_img))


def test_committed_splits_equal_a_regeneration(repo_root, tmp_path):
    for split, count in (('val', 64), ('calib', 16)):
        committed = json.loads((repo_root / 'data/shapes/annotations' / f'instances_{split}.json').read_text())
        assert len(committed['images']) == count
    ann = write_split(tmp_path, 0, 'calib', 16)
    assert json.loads(ann.read_text()) == committed
    img = committed['images'][5]['file_name']
    assert (tmp_path / 'calib' / img).read_bytes() == (repo_root / 'data/shapes/calib' / img).read_bytes()


def test_annotations_are_exact_coco_ground_truth(repo_root):
    """Ground truth fed back as detections scores AP 1 (bbox and segm): boxes, polygons and areas agree."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(str(repo_root / 'data/shapes/annotations/instances_calib.json'))
    assert [c['name'] for c in gt.loadCats(gt.getCatIds())] == list(CLASSES)
    anns = gt.loadAnns(gt.getAnnIds())
    assert {a['category_id'] for a in anns} == set(range(1, 6))
    assert all(len(a['segmentation']) == 1 and len(a['segmentation'][0]) >= 6 for a in anns)
    counts = np.bincount([a['image_id'] for a in anns])
    assert counts[1:].min() >= 1 and counts.max() >= 3  # every image has shapes, some several
    from pycocotools import mask as mask_utils

    def rle(a):
        img = gt.imgs[a['image_id']]
        return mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], img['height'], img['width']))

    for iou_type in ('bbox', 'segm'):
        dets = [dict(image_id=a['image_id'], category_id=a['category_id'], score=1.0,
                     **({'bbox': a['bbox']} if iou_type == 'bbox' else {'segmentation': rle(a)}))
                for a in anns]
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)


def test_visible_masks_match_the_rendered_pixels():
    """The polygon of an occluded shape covers its visible pixels only: the mask rasterised from the annotation
    agrees with where the image differs from the same image without that shape's area painted over."""
    from pycocotools import mask as mask_utils
    img, anns = render_image(0, 'val', 1)
    assert len(anns) >= 2
    masks = np.stack([mask_utils.decode(mask_utils.frPyObjects([a['polygon']], 224, 224)).max(-1) for a in anns])
    assert masks.sum(0).max() == 1  # visible parts never overlap
    for a, m in zip(anns, masks):
        assert abs(m.sum() - a['area']) <= 0.1 * a['area'] + 30


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match='split'):
        render_image(0, 'test', 0)
    with pytest.raises(ValueError, match='num_images'):
        write_split(tmp_path, 0, 'val', 0)
    with pytest.raises(ValueError, match='NAME=COUNT'):
        parse_splits(['val=0'])
    assert parse_splits(['val=3', 'train=5']) == {'val': 3, 'train': 5}
