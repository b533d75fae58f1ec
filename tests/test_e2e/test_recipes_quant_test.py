"""Every recipe end to end through tools/quant_test.py on a small detector and a small classifier: the run saves
its quantizer state, and ``--load-state`` reproduces its metrics without calibrating."""
from __future__ import annotations

import json
import os.path as osp

import pytest

from e2e_helpers import REPO, SMALL_DETECTION_OPTIONS, run_tool

pytestmark = pytest.mark.slow

DETECTION = REPO / 'configs' / 'detection'
CLASSIFICATION = REPO / 'configs' / 'classification'
#: detector config of each recipe: every recipe meets one detector, and the detectors cover Mask R-CNN and Cascade
#: Mask R-CNN, mmdet Swin and the ViTDet backbone
DETECTOR = {
    'repq_vit': 'mask_rcnn_swin_t_1x_coco_tiny_repq_vit_w8a8.py',
    'adfq_vit': 'vitdet_mask_rcnn_vit_tiny_coco_tiny_adfq_vit_w8a8.py',
    'fq_vit': 'cascade_mask_rcnn_swin_t_3x_coco_tiny_fq_vit_w8a8.py',
    'ptq4vit': 'vitdet_mask_rcnn_vit_tiny_coco_tiny_ptq4vit_w8a8.py',
    'qhyvit': 'mask_rcnn_swin_t_1x_coco_tiny_qhyvit_w8a8.py',
    'noisyquant': 'cascade_mask_rcnn_swin_t_3x_coco_tiny_noisyquant_w8a8.py',
}
#: classifier of each recipe (a plain ViT or a hybrid)
CLASSIFIER = {'repq_vit': 'deit_t', 'adfq_vit': 'mobilevit_xxs', 'fq_vit': 'deit_t', 'ptq4vit': 'mobilevit_xxs',
              'qhyvit': 'mobilevit_xxs', 'noisyquant': 'deit_t'}
CLS_OPTIONS = {
    'deit_t': ['model.model_kwargs.img_size=32', 'model.model_kwargs.depth=2',
               'test_dataloader.dataset.pipeline.1.input_size=32'],
    'mobilevit_xxs': ['test_dataloader.dataset.pipeline.1.input_size=64'],
}
METHOD_NAME = {'repq_vit': 'RepQViT', 'adfq_vit': 'ADFQViT', 'fq_vit': 'FQViT', 'ptq4vit': 'PTQ4ViT',
               'qhyvit': 'QHyViT', 'noisyquant': 'NoisyQuant'}
#: the Q-HyViT shrink-grid search is slow on CPU; its choice logic is tested in the unit tests
FAST = {'qhyvit': ['quant_method.range_method=minmax']}


def _run_and_reload(config, work_dir, options):
    first = run_tool(config, work_dir / 'run', options=options, extra=['--no-float'])
    state = first['state_file']
    again = run_tool(config, work_dir / 'reload', options=options, extra=['--no-float', '--load-state', state])
    return first, again


@pytest.mark.parametrize('recipe', sorted(DETECTOR))
def test_recipe_on_a_detector(recipe, tmp_path):
    config = DETECTION / DETECTOR[recipe]
    options = list(SMALL_DETECTION_OPTIONS) + FAST.get(recipe, [])
    first, again = _run_and_reload(config, tmp_path, options)
    assert first['method']['type'] == METHOD_NAME[recipe]
    assert first['metrics']['quant'] == again['metrics']['quant']
    assert again['calibration']['loaded_from'] == first['state_file']
    assert 'coco/bbox_mAP' in first['metrics']['quant'] and 'coco/segm_mAP' in first['metrics']['quant']


@pytest.mark.parametrize('recipe', sorted(CLASSIFIER))
def test_recipe_on_a_classifier(recipe, tmp_path):
    model = CLASSIFIER[recipe]
    config = CLASSIFICATION / f'{model}_imagenet_tiny_{recipe}_w8a8.py'
    options = CLS_OPTIONS[model] + FAST.get(recipe, []) + ['test_evaluator.topk=(1,5,500)']
    first, again = _run_and_reload(config, tmp_path, options)
    assert first['method']['type'] == METHOD_NAME[recipe]
    assert first['metrics']['quant'] == again['metrics']['quant']
    assert first['metrics']['quant']['accuracy/top500'] > 0
    saved = json.load(open(osp.join(tmp_path, 'run', 'quant_results.json')))
    assert saved['method']['type'] == METHOD_NAME[recipe]


def test_sampled_searches_are_recorded_and_reload_to_the_same_metrics(tmp_path):
    """``quant_method.max_samples`` through tools/quant_test.py: the results file records it and counts the sampled
    searches, and the saved state reloads to the same metrics."""
    config = CLASSIFICATION / 'deit_t_imagenet_tiny_qhyvit_w8a8.py'
    options = CLS_OPTIONS['deit_t'] + ['quant_method.max_samples=64', 'test_evaluator.topk=(1,5,500)']
    first, again = _run_and_reload(config, tmp_path, options)
    assert first['method']['max_samples'] == 64
    searches = first['quantizer_searches']
    assert searches['qhyvit/mse']['sampled'] > 0 and searches['qhyvit/mse']['exact'] == 0
    assert searches['twin_softmax/twin_split']['sampled'] > 0
    assert searches['uniform/mse'] == dict(exact=10, sampled=0), 'the weights are searched exactly'
    assert first['metrics']['quant'] == again['metrics']['quant']
