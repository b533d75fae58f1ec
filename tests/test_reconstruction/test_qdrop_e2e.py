"""QDrop end to end through tools/quant_test.py: a small Mask R-CNN Swin (random weights, 2 COCO images) and a
MobileViT hybrid classifier (bridge groups reconstructed); the saved state reloads to the same metrics."""
from __future__ import annotations

import json
import os.path as osp

import pytest
from e2e_helpers import SMALL_DETECTION_OPTIONS, SWIN_TINY_CONFIG, run_tool

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: QDrop W4/A4 with a 2-step schedule instead of the leaf's method (the model / data bases are the leaf's)
QDROP = ['quant_method.type=QDrop', 'quant_method.w_bits=4', 'quant_method.a_bits=4',
         'quant_method.reconstruction.iters=2', 'quant_method.reconstruction.progress=False',
         'quant_method.reconstruction.cache_mb=1']


def _check_record(record, work, kinds):
    saved = json.loads((work / 'quant_results.json').read_text())
    recon = saved['reconstruction']
    assert saved['method']['type'] == 'QDrop' and saved['method']['reconstruction']['qdrop_prob'] == 0.5
    assert recon['schedule']['iters'] == 2 and recon['schedule']['seed'] == 1005
    units = [u for u in recon['units'] if 'skipped' not in u]
    assert units and all(u['iters'] == 2 and u['seconds'] >= 0 and u['cache_peak_bytes'] <= 2**20 for u in units)
    assert {u['kind'] for u in units} >= set(kinds)
    assert recon['peak_rss_mb'] > 0
    return saved


def test_qdrop_detector_end_to_end_and_reload(tmp_path):
    options = SMALL_DETECTION_OPTIONS + ['test_dataloader.dataset.pipeline.1.scale=(256,160)',
                                         'model.backbone.depths=(1,1,2,1)'] + QDROP
    run = tmp_path / 'run'
    record = run_tool(SWIN_TINY_CONFIG, run, options=options, extra=['--no-float'])
    saved = _check_record(record, run, kinds={'block', 'module'})
    names = [u['name'] for u in saved['reconstruction']['units']]
    assert 'backbone.stages.0.blocks.0' in names and 'backbone.patch_embed' in names
    reload = run_tool(SWIN_TINY_CONFIG, tmp_path / 'reload', options=options,
                      extra=['--no-float', '--load-state', str(run / 'quant_state.pth')])
    assert reload['metrics']['quant'] == record['metrics']['quant']
    assert 'reconstruction' not in reload


def test_qdrop_hybrid_classifier_bridge_groups_and_reload(tmp_path):
    config = osp.join(REPO, 'configs', 'classification', 'mobilevit_xxs_imagenet_tiny_minmax_w8a8.py')
    options = ['test_dataloader.dataset.pipeline.1.input_size=64', 'quant_method.reconstruction.group_tag=bridge_',
               *QDROP]
    run = tmp_path / 'run'
    record = run_tool(config, run, options=options, extra=['--no-float'])
    saved = _check_record(record, run, kinds={'group', 'module'})
    groups = [u['name'] for u in saved['reconstruction']['units'] if u['kind'] == 'group']
    assert groups == ['model.stages.2.1', 'model.stages.3.1', 'model.stages.4.1']
    reload = run_tool(config, tmp_path / 'reload', options=options,
                      extra=['--no-float', '--load-state', str(run / 'quant_state.pth')])
    assert reload['metrics']['quant'] == record['metrics']['quant']
