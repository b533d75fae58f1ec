"""tools/quant_test.py end to end on real COCO images with mmdet's Mask R-CNN Swin-T (random weights).

With random weights the AP against the real annotations is ~0, so the AP checks also use a pseudo ground truth:
the float model's own top detections. Against it the float model scores AP 1.0 exactly and the quantized model
something in between, which makes "reported AP == independent COCOeval" a check with teeth.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e2e_helpers import (SMALL_DETECTION_OPTIONS, SWIN_TINY_CONFIG, cocoeval_stats, pseudo_ground_truth, run_tool)

pytestmark = pytest.mark.slow

STAT_KEYS = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """Every run in this module uses one intra-op thread, as each torchrun rank does (OMP_NUM_THREADS=1).

    CPU convolutions sum in a thread-count dependent order; a 1-ulp difference can move a value across a
    rounding boundary of the fake quantizer, so runs compared for exact equality must share the thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A real mmengine checkpoint of the config's detector (seeded random weights, numpy scalars in its log)."""
    from mmengine.runner import Runner

    from quant_hooks.apis import load_config
    out = tmp_path_factory.mktemp('ckpt')
    cfg = load_config(str(SWIN_TINY_CONFIG), work_dir=str(out))
    cfg.log_level = 'WARNING'
    cfg.train_dataloader = cfg.test_dataloader  # save_checkpoint records the train set's metainfo
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    runner.message_hub.update_scalar('train/loss', np.float64(0.25))
    runner.save_checkpoint(str(out), 'detector.pth', save_optimizer=False, save_param_scheduler=False)
    return out / 'detector.pth'


@pytest.fixture(scope='module')
def run_a(tmp_path_factory, checkpoint):
    work = tmp_path_factory.mktemp('run_a')
    return work, run_tool(SWIN_TINY_CONFIG, work, checkpoint, SMALL_DETECTION_OPTIONS,
                          extra=['--out', str(work / 'predictions.pkl')])


@pytest.fixture(scope='module')
def pseudo_gt(run_a, coco_tiny, tmp_path_factory):
    work, _ = run_a
    out = tmp_path_factory.mktemp('pseudo') / 'pseudo_gt.json'
    img_ids = pseudo_ground_truth(coco_tiny / 'annotations/instances_val.json', work / 'float/coco.bbox.json',
                                  work / 'float/coco.segm.json', out)
    assert len(img_ids) == 2
    return out


@pytest.fixture(scope='module')
def run_b(tmp_path_factory, checkpoint, pseudo_gt):
    work = tmp_path_factory.mktemp('run_b')
    return work, run_tool(SWIN_TINY_CONFIG, work, checkpoint,
                          SMALL_DETECTION_OPTIONS + [f'test_evaluator.ann_file={pseudo_gt}'])


def _reported(metrics, iou_type):
    return np.array([metrics[f'coco/{iou_type}_{k}'] for k in STAT_KEYS])


def test_run_reports_both_metrics_and_records_the_run(run_a, coco_tiny):
    work, record = run_a
    for phase in ('float', 'quant'):
        assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(record['metrics'][phase])
    # Swin-T: patch embed + 12 x (qkv, proj, fc1, fc2, 2 matmuls, softmax logits) + 3 merges
    assert record['num_sites'] == 88
    assert record['sites_by_kind'] == {'act': 12, 'conv': 1, 'linear': 51, 'matmul': 24}
    calib = record['calibration']
    assert calib['num_images'] == 2 and len(calib['images']) == 2
    val_images = {p.name for p in (coco_tiny / 'val').iterdir()}
    assert not set(calib['images']) & val_images, 'calibration images must not come from the test set'
    assert (work / 'quant_state.pth').is_file()
    saved = json.loads((work / 'quant_results.json').read_text())
    assert saved['method']['w_bits'] == 8 and saved['method']['a_bits'] == 8
    # --out dumps the quantized pass's predictions (mmdet's DumpDetResults format)
    import pickle
    with open(work / 'predictions.pkl', 'rb') as f:
        predictions = pickle.load(f)
    assert [p['img_id'] for p in predictions] == [25986, 104455]
    quant_boxes = json.loads((work / 'quant/coco.bbox.json').read_text())
    assert sum(len(p['pred_instances']['bboxes']) for p in predictions) == len(quant_boxes)


@pytest.mark.parametrize('phase', ['float', 'quant'])
@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_reported_ap_equals_independent_cocoeval_on_real_annotations(run_a, coco_tiny, phase, iou_type):
    work, record = run_a
    stats = cocoeval_stats(coco_tiny / 'annotations/instances_val.json', work / phase / f'coco.{iou_type}.json',
                           iou_type, img_ids=[25986, 104455])
    np.testing.assert_allclose(_reported(record['metrics'][phase], iou_type), np.round(stats[:6], 3), atol=1e-9)


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_pseudo_ground_truth_gives_float_ap_one_and_quant_ap_matches_cocoeval(run_b, pseudo_gt, iou_type):
    work, record = run_b
    assert record['metrics']['float'][f'coco/{iou_type}_mAP'] == 1.0
    quant_ap = record['metrics']['quant'][f'coco/{iou_type}_mAP']
    assert 0.0 < quant_ap <= 1.0
    for phase in ('float', 'quant'):
        stats = cocoeval_stats(pseudo_gt, work / phase / f'coco.{iou_type}.json', iou_type)
        np.testing.assert_allclose(_reported(record['metrics'][phase], iou_type), np.round(stats[:6], 3),
                                   atol=1e-9)


def test_saved_state_and_same_seed_reproduce_the_quantized_metrics(run_a, run_b, checkpoint, pseudo_gt,
                                                                   tmp_path):
    """Run A calibrated with the same seed and images as run B; evaluating from A's saved state gives B's
    numbers exactly, with no calibration."""
    work_a, _ = run_a
    _, record_b = run_b
    record_c = run_tool(SWIN_TINY_CONFIG, tmp_path, checkpoint,
                        SMALL_DETECTION_OPTIONS + [f'test_evaluator.ann_file={pseudo_gt}'],
                        extra=['--no-float', '--load-state', str(work_a / 'quant_state.pth')])
    assert 'float' not in record_c['metrics']
    assert record_c['metrics']['quant'] == record_b['metrics']['quant']
    assert record_c['calibration']['loaded_from'].endswith('quant_state.pth')
    for iou_type in ('bbox', 'segm'):
        b = json.loads((run_b[0] / 'quant' / f'coco.{iou_type}.json').read_text())
        c = json.loads((tmp_path / 'quant' / f'coco.{iou_type}.json').read_text())
        assert b == c, 'same seed and saved state must give identical detections'


def test_two_process_gloo_run_equals_the_single_process_run(run_b, checkpoint, pseudo_gt, tmp_path):
    """tools/dist_quant_test.sh with 2 CPU processes: each rank evaluates one image; calibration is identical
    on every rank, so the metrics equal the 1-process run's."""
    import os
    import subprocess
    import sys

    from e2e_helpers import REPO
    _, record_b = run_b
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(29500 + os.getpid() % 1000), PYTHONWARNINGS='ignore',
               OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', str(REPO / 'tools/dist_quant_test.sh'), str(SWIN_TINY_CONFIG), str(checkpoint), '2',
                           '--work-dir', str(tmp_path), '--cfg-options', *SMALL_DETECTION_OPTIONS,
                           f'test_evaluator.ann_file={pseudo_gt}'], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / 'quant_results.json').read_text())
    assert record['world_size'] == 2 and record['launcher'] == 'pytorch'
    assert record['metrics'] == record_b['metrics']
