"""Every classification config loads and crosses one model base, one dataset base and one method base."""
from __future__ import annotations

import glob
import os.path as osp
import subprocess
import sys

import pytest
import timm
from mmengine.config import Config

from quant_hooks.registry import MODEL_ADAPTERS, QUANT_METHODS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LEAVES = sorted(glob.glob(osp.join(REPO, 'configs', 'classification', '*.py')))
ADAPTERS = {'vit': 'TimmViTAdapter', 'deit': 'TimmViTAdapter', 'swin': 'TimmSwinAdapter',
            'mobilevit': 'TimmHybridAdapter', 'efficientformer': 'TimmHybridAdapter'}


def test_leaves_are_in_sync_with_the_generator():
    out = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'make_cls_configs.py'), '--check'],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(LEAVES) == 15 * 12 * 3 + 15 * 12  # models x methods x bits, and one bundled-data leaf per method


@pytest.mark.parametrize('path', LEAVES, ids=[osp.basename(p) for p in LEAVES])
def test_leaf_config(path):
    cfg = Config.fromfile(path)
    name = osp.basename(path)[:-3]
    assert cfg.default_scope == 'quant_hooks' and cfg.test_cfg.type == 'TestLoop'
    assert cfg.model.type == 'TimmClassifier' and timm.is_model(cfg.model.model_name)
    family = next(f for f in sorted(ADAPTERS, key=len, reverse=True) if name.startswith(f))
    assert cfg.quant_adapter.type == ADAPTERS[family] and cfg.quant_adapter.type in MODEL_ADAPTERS
    assert cfg.quant_method.type in QUANT_METHODS
    bits = name.rsplit('_', 1)[1]
    assert bits == f'w{cfg.quant_method.w_bits}a{cfg.quant_method.a_bits}'
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == ['LoadImageRGB', 'TimmEvalTransform', 'PackClsInputs']
    assert pipeline[1].model_name == cfg.model.model_name
    assert cfg.test_evaluator.type == 'TopKAccuracy' and cfg.quant_calibration.num_images >= 1
    assert [h.type for h in cfg.custom_hooks] == ['quant_hooks.PTQHook']
    tiny = '_imagenet_tiny_' in name
    assert (cfg.test_dataloader.dataset.get('ann_file') == 'val.txt') == tiny


def test_fidelity_config():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'fidelity', 'vit_s14_dinov2_features_minmax_w8a8.py'))
    assert cfg.model.num_classes == 0 and cfg.test_evaluator.type == 'FeatureFidelity'
    assert cfg.test_dataloader.dataset.pipeline[1].input_size == 224
