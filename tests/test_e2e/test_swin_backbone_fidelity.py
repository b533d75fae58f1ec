"""The PTQ hook's building blocks on mmdet's Swin-T backbone and a real COCO image."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, MODELS, init_default_scope
from torch import nn

from e2e_helpers import SWIN_TINY_CONFIG
from quant_hooks.adapters import MMDetSwinAdapter, run_batches
from quant_hooks.calibration import build_calibration_loader
from quant_hooks.methods import MinMaxPTQ, set_quant_enabled
from quant_hooks.nn import QuantLinear

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def setup():
    from quant_hooks.apis import load_config
    cfg = load_config(str(SWIN_TINY_CONFIG))
    init_default_scope('mmdet')
    small = [dict(t, scale=(512, 320)) if t['type'] == 'Resize' else t for t in cfg.test_dataloader.dataset.pipeline]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    test_set = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=small))
    image = pseudo_collate([test_set[0]])
    calib = dict(cfg.quant_calibration, num_images=2)
    calib['dataset'] = dict(calib['dataset'], pipeline=small)
    loader, _ = build_calibration_loader(calib)
    return model, image, loader


def _features(model, batch):
    with torch.no_grad():
        inputs = model.data_preprocessor(batch, False)['inputs']
        return torch.cat([f.flatten() for f in model.backbone(inputs)])


def _quantized_copy(model, loader, bits):
    qmodel = copy.deepcopy(model)
    adapter = MMDetSwinAdapter()
    sites = adapter.prepare(qmodel)
    MinMaxPTQ(w_bits=bits, a_bits=bits, w_granularity='per_tensor').quantize(
        sites, lambda: run_batches(adapter, qmodel, loader))
    return qmodel, sites


def test_every_backbone_linear_is_quantized(setup):
    model, _, loader = setup
    n_linear = sum(isinstance(m, nn.Linear) for m in model.backbone.modules())
    qmodel, _ = _quantized_copy(model, loader, 8)
    quantized = [m for m in qmodel.backbone.modules() if isinstance(m, QuantLinear)]
    assert len(quantized) == n_linear == 51  # 12 blocks x 4 + 3 patch merges
    assert all(m.input_quantizer.calibrated and m.weight_quantizer.calibrated for m in quantized)
    assert all(isinstance(m, QuantLinear) for m in qmodel.backbone.modules() if isinstance(m, nn.Linear))
    # the neck and heads stay in floating point with scope='backbone'
    assert not any(isinstance(m, QuantLinear) for m in qmodel.roi_head.modules())


def test_w8a8_is_close_to_float_and_w2a2_is_clearly_worse(setup):
    model, image, loader = setup
    ref = _features(model, image)
    cos = {}
    for bits in (8, 2):
        qmodel, sites = _quantized_copy(model, loader, bits)
        cos[bits] = F.cosine_similarity(_features(qmodel, image), ref, dim=0).item()
        set_quant_enabled(sites, False)
        assert torch.equal(_features(qmodel, image), ref), 'quantization off must reproduce float bit for bit'
    assert cos[8] > 0.99, cos
    assert cos[2] < cos[8] - 0.1, cos
