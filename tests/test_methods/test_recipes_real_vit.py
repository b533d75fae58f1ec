"""The recipes on a real trained ViT-S/14 (DINOv2 architecture, ../shared/data): feature SQNR of the whole model
at W4/A4, and NoisyQuant's per-layer search on real post-GELU activations.

Calibration on 8 real ImageNet val images, evaluation on 8 others, 224 px. Run with ``-s`` for the figures.
"""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

from quant_hooks.adapters import TimmViTAdapter, run_batches
from quant_hooks.quantizers import build_quantizer, search_noise
from quant_hooks.registry import QUANT_METHODS
from tests.conftest import load_imagenet_images, shared_path

pytestmark = pytest.mark.slow

WEIGHTS = 'data/weights/vit_small_patch14_dinov2.imgfocus.safetensors'
IMAGES = 'data/imagenet_val_subset/images'


def _images(count, offset):
    return load_imagenet_images(shared_path(IMAGES), count, offset)


def _model():
    import timm
    from safetensors.torch import load_file
    model = timm.create_model('vit_small_patch14_dinov2', num_classes=0, dynamic_img_size=True)
    model.load_state_dict(load_file(str(shared_path(WEIGHTS))), strict=True)
    return model.eval()


@pytest.fixture(scope='module')
def data():
    calib, test = _images(8, 0), _images(8, 8)
    with torch.no_grad():
        ref = _model()(test)
    return calib, test, ref


def sqnr_db(out, ref):
    return float(10 * torch.log10(ref.square().mean() / (out - ref).square().mean()))


def _recipe_sqnr(cfg, data):
    calib, test, ref = data
    model = _model()
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        method = QUANT_METHODS.build(cfg)
    start = time.perf_counter()
    method.quantize(sites, lambda: run_batches(adapter, model, [calib[:4], calib[4:]]))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out = model(test)
    return sqnr_db(out, ref), seconds


def test_w4a4_feature_sqnr_orders_the_recipes(data):
    results = {}
    for name, cfg in (('MinMax', dict(type='MinMax')), ('RepQViT', dict(type='RepQViT')),
                      ('ADFQViT', dict(type='ADFQViT', post_ln_granularity='per_token_static')),
                      ('PTQ4ViT', dict(type='PTQ4ViT')),
                      ('NoisyQuant(PTQ4ViT)', dict(type='NoisyQuant', base=dict(type='PTQ4ViT')))):
        results[name] = _recipe_sqnr(dict(cfg, w_bits=4, a_bits=4), data)
    print('\nW4/A4 feature SQNR on 8 held-out images (dB), calibration seconds')
    for name, (db, s) in results.items():
        print(f'{name:22s} {db:7.2f} dB  {s:6.1f} s')
    assert results['MinMax'][0] < results['RepQViT'][0] <= results['ADFQViT'][0]
    assert results['NoisyQuant(PTQ4ViT)'][0] >= results['PTQ4ViT'][0] - 0.05


def test_noisy_bias_raises_block6_fc2_output_sqnr_at_w6a6(data):
    calib, test, _ = data
    model = _model()
    fc2 = model.blocks[6].mlp.fc2
    seen = []
    h = fc2.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        model(calib)
        model(test)
    h.remove()
    x_cal, x_test = seen
    wq = build_quantizer(dict(type='uniform', bits=6, granularity=dict(type='per_channel', axis=0)))
    wq.observing = True
    wq(fc2.weight)
    wq.freeze()
    w = wq(fc2.weight).detach()
    q = build_quantizer(dict(type='noisy', quantizer=dict(type='uniform', bits=6), seed=0))
    q.observing = True
    q(x_cal)
    q.freeze()
    fn = lambda x: F.linear(x, w, fc2.bias)  # noqa: E731
    start = time.perf_counter()
    res = search_noise(q, [x_cal], fn, [F.linear(x_cal, fc2.weight, fc2.bias)])
    seconds = time.perf_counter() - start
    ref = F.linear(x_test, fc2.weight, fc2.bias)
    with torch.no_grad():
        noisy = sqnr_db(fn(q.fake_quant_unfolded(x_test)), ref)
        q.set_noise(0.0, 0.0)
        plain = sqnr_db(fn(q.fake_quant_unfolded(x_test)), ref)
    print(f'\nblock 6 fc2 W6/A6 output SQNR on held-out images: plain {plain:.2f} dB, noisy bias {noisy:.2f} dB '
          f"(range {res['noise_range']}, mean {res['noise_mean']}), search {seconds:.2f} s")
    assert noisy > plain
    assert seconds < 10
