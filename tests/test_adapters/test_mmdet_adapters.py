"""Sites of every detector config (counts per role derived from the config) and bit-exactness with quantization off.

Each detector is built once (seeded random weights). Counts are derived from the config's architecture (Swin
depths, ViT depth, FPN inputs, RPN convs, bbox / mask head layers, cascade stages), not from the adapter.
Bit-exactness compares backbone features and final predictions on a real COCO image (data/coco_tiny) for: the
wrapped model without quantizers, and with calibrated MinMax quantizers switched off.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from quant_hooks.adapters import MMDetSwinAdapter, ViTDetAdapter, run_batches
from quant_hooks.methods import MinMaxPTQ, set_quant_enabled
from quant_hooks.nn import QuantConv2d, QuantLinear
from quant_hooks.sites import count_roles
from tests.detection_helpers import backbone_features, build_detector, coco_batch, load_model_cfg, predictions

ADAPTERS = {'MMDetSwinAdapter': MMDetSwinAdapter, 'ViTDetAdapter': ViTDetAdapter}
#: detectors whose bit-exactness check runs by default; the others are marked slow
FAST = ('mask_rcnn_swin_t_1x', 'vitdet_mask_rcnn_vit_tiny')
DETECTORS = ('mask_rcnn_swin_t_1x', 'mask_rcnn_swin_t_3x', 'mask_rcnn_swin_s_1x', 'mask_rcnn_swin_s_3x',
             'cascade_mask_rcnn_swin_t_3x', 'cascade_mask_rcnn_swin_s_3x', 'vitdet_mask_rcnn_vit_b',
             'vitdet_mask_rcnn_vit_tiny')
SCOPES = ('backbone', 'full')


# -- expectations from the config ------------------------------------------------------------------------------
def expected_backbone_roles(cfg) -> dict[str, int]:
    """Tensors per role in the backbone: per block qkv, proj, fc1, fc2, two matmuls and the softmax input; Swin adds a patch merge
    between stages; one patch embedding."""
    bb = cfg.model.backbone
    if bb.type == 'SwinTransformer':
        blocks, merges = sum(bb.depths), len(bb.depths) - 1
    else:
        blocks, merges = bb.depth, 0
    per_block = dict(q=1, k=1, v=1, attn_logits=1, post_softmax=1, attn_out=1, post_gelu=1, post_ln=2)
    roles = {role: n * blocks for role, n in per_block.items()}
    roles['post_ln'] += merges
    roles['embed'] = 1
    roles['weight'] = 4 * blocks + merges + 1
    return roles


BBOX_HEAD_LAYERS = {'Shared2FCBBoxHead': (0, 2), 'Shared4Conv1FCBBoxHead': (4, 1)}


def expected_head_layers(cfg) -> tuple[int, int]:
    """(Linear + Conv2d layers of neck, RPN and RoI heads; how many are prediction layers) from the config.
    Transposed convolutions (mask upsampling, the feature pyramid's 4x / 2x levels) are not counted."""
    m = cfg.model
    if m.neck.type == 'FPN':
        n_in = len(m.neck.in_channels)
        extra = m.neck.num_outs - n_in if m.neck.get('add_extra_convs', False) else 0
        neck = 2 * n_in + extra
    else:  # SimpleFeaturePyramid: a 1x1 and a 3x3 conv per level
        neck = 2 * len(m.neck.scale_factors)
    rpn = m.rpn_head.get('num_convs', 1) + 2
    last = 2
    stages = m.roi_head.get('num_stages', 1)
    bbox_heads = m.roi_head.bbox_head if isinstance(m.roi_head.bbox_head, list) else [m.roi_head.bbox_head] * stages
    bbox = 0
    for head in bbox_heads:
        convs, fcs = BBOX_HEAD_LAYERS.get(head.type, (head.get('num_shared_convs', 0), head.get('num_shared_fcs', 0)))
        bbox += convs + fcs + 2
        last += 2
    mask_heads = m.roi_head.mask_head if isinstance(m.roi_head.mask_head, list) else [m.roi_head.mask_head] * stages
    mask = sum(head.get('num_convs', 4) + 1 for head in mask_heads)
    last += len(mask_heads)
    return neck + rpn + bbox + mask, last


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def detector(request):
    """(name, config, float model) of the detector named by the (indirect) parameter; built once per module."""
    cfg = load_model_cfg(request.param)
    return request.param, cfg, build_detector(cfg)


def _adapter(cfg, scope):
    return ADAPTERS[cfg.quant_adapter['type']](scope=scope)


# -- site counts ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scope', SCOPES)
@pytest.mark.parametrize('detector', DETECTORS, indirect=True)
def test_site_counts_follow_the_architecture(detector, scope):
    name, cfg, model = detector
    model = copy.deepcopy(model)
    sites = _adapter(cfg, scope).prepare(model)
    expected = expected_backbone_roles(cfg)
    head_layers, last_layers = expected_head_layers(cfg)
    if scope == 'full':
        expected['generic'] = head_layers
        expected['weight'] += head_layers
    assert count_roles(sites) == dict(sorted(expected.items())), name
    assert len({s.name for s in sites}) == len(sites), 'a site is listed twice'
    assert [s.name for s in sites if 'first' in s.tags] == [
        'backbone.patch_embed.projection' if cfg.model.backbone.type == 'SwinTransformer' else
        'backbone.patch_embed.proj']
    assert sum('last' in s.tags for s in sites) == (last_layers if scope == 'full' else 0)
    # nothing quantizable is left unwrapped in the scope
    prefix = 'backbone.' if scope == 'backbone' else ''
    plain = [n for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, (nn.Linear, nn.Conv2d))
             and not isinstance(m, (QuantLinear, QuantConv2d))]
    assert plain == []


def test_last_tags_name_the_prediction_layers():
    cfg = load_model_cfg('cascade_mask_rcnn_swin_t_3x')
    model = build_detector(cfg)
    sites = MMDetSwinAdapter(scope='full').prepare(model)
    last = sorted(s.name.rpartition('.')[2] for s in sites if 'last' in s.tags)
    assert last == sorted(['rpn_cls', 'rpn_reg'] + ['fc_cls', 'fc_reg'] * 3 + ['conv_logits'] * 3)
    # an override on the tags keeps them (and the patch embedding) at 8 bits while the rest is at 4
    method = MinMaxPTQ(w_bits=4, a_bits=4, overrides=[dict(tags=['first', 'last'], w_bits=8, a_bits=8)])
    bits = {s.name: method.bits_for(s) for s in sites}
    assert bits['roi_head.bbox_head.2.fc_cls'] == (8, 8) and bits['backbone.patch_embed.projection'] == (8, 8)
    assert bits['roi_head.bbox_head.2.shared_convs.0.conv'] == (4, 4)


def test_bad_scope_is_refused():
    with pytest.raises(ValueError, match="scope='neck' is invalid: allowed values are"):
        ViTDetAdapter(scope='neck')


def test_adapter_refuses_the_wrong_backbone():
    model = build_detector(load_model_cfg('vitdet_mask_rcnn_vit_tiny'))
    with pytest.raises(TypeError, match='expects an mmdet SwinTransformer backbone'):
        MMDetSwinAdapter().prepare(model)


# -- bit-exactness with quantization off ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def reference(detector, coco_tiny):
    """A real COCO batch and the float model's backbone features and predictions on it."""
    _, cfg, model = detector
    batch = coco_batch(cfg, coco_tiny)
    return batch, backbone_features(model, batch), predictions(model, batch)


def _assert_equal(got, want, what):
    feats_got, preds_got = got
    feats_want, preds_want = want
    assert len(feats_got) == len(feats_want)
    for i, (a, b) in enumerate(zip(feats_got, feats_want)):
        assert torch.equal(a, b), f'{what}: backbone output {i} differs (max |diff| {(a - b).abs().max():.3g})'
    for key in preds_want:
        assert torch.equal(preds_got[key], preds_want[key]), f'{what}: predicted {key} differ'


@pytest.mark.parametrize('scope', SCOPES)
@pytest.mark.parametrize('detector', [d if d in FAST else pytest.param(d, marks=pytest.mark.slow) for d in DETECTORS],
                         indirect=True)
def test_quantization_off_is_bit_exact(detector, reference, scope):
    name, cfg, model = detector
    batch, feats, preds = reference
    assert preds['bboxes'].shape[0] == 5, 'the reference predictions should exercise the heads'
    model = copy.deepcopy(model)
    adapter = _adapter(cfg, scope)
    sites = adapter.prepare(model)
    _assert_equal((backbone_features(model, batch), predictions(model, batch)), (feats, preds),
                  f'{name}/{scope} wrapped, no quantizer')

    method = MinMaxPTQ(w_bits=4, a_bits=4)
    method.quantize(sites, lambda: run_batches(adapter, model, [batch]))
    set_quant_enabled(sites, False)
    _assert_equal((backbone_features(model, batch), predictions(model, batch)), (feats, preds),
                  f'{name}/{scope} quantizers installed but disabled')

    set_quant_enabled(sites, True)  # the quantizers are really in the path
    quant_feats = backbone_features(model, batch)
    assert not torch.equal(quant_feats[-1], feats[-1])
