"""The papers' recipes: which quantizer each role gets, RepQ-ViT's reparameterization, NoisyQuant's search,
state round trips."""
from __future__ import annotations

import pytest
import timm
import torch
from mmengine.registry import DefaultScope

from quant_hooks.adapters import MMDetSwinAdapter, TimmHybridAdapter, TimmSwinAdapter, TimmViTAdapter, ViTDetAdapter
from quant_hooks.adapters import run_batches
from quant_hooks.errors import ConfigError
from quant_hooks.methods import set_quant_enabled
from quant_hooks.registry import QUANT_METHODS, build_setting
from quant_hooks.state import load_quantizer_state, save_quantizer_state
from tests.detection_helpers import build_detector, load_model_cfg

RECIPES = {
    'RepQViT': {'post_ln': 'UniformQuantizer', 'post_softmax': 'LogSqrt2Quantizer', 'post_gelu': 'UniformQuantizer'},
    'ADFQViT': {'post_ln': 'OutlierAwareQuantizer', 'post_gelu': 'ShiftLog2Quantizer',
                'post_softmax': 'LogSqrt2Quantizer', 'q': 'UniformQuantizer'},
    'PTQ4ViT': {'post_softmax': 'TwinSoftmaxQuantizer', 'post_gelu': 'TwinGeluQuantizer', 'post_ln': 'UniformQuantizer'},
    'FQViT': {'post_ln': 'PowerOfTwoFactorQuantizer', 'attn_logits': 'LogIntSoftmax', 'post_gelu': 'UniformQuantizer'},
    'QHyViT': {'post_ln': 'HybridQuantizer', 'post_softmax': 'TwinSoftmaxQuantizer', 'v': 'HybridQuantizer'},
    'NoisyQuant': {'post_ln': 'NoisyQuantizer', 'post_gelu': 'NoisyQuantizer', 'attn_out': 'NoisyQuantizer',
                   'post_softmax': 'TwinSoftmaxQuantizer', 'q': 'UniformQuantizer'},
}


def build_method(cfg: dict):
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        return build_setting(QUANT_METHODS, cfg, 'quant_method')


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=2, num_classes=10).eval()
    return model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def quantize(model, adapter, x, cfg):
    sites = adapter.prepare(model)
    method = build_method(cfg)
    summary = method.quantize(sites, lambda: run_batches(adapter, model, [x[:2], x[2:]]))
    return sites, method, summary


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_each_recipe_installs_its_quantizers_and_runs(name):
    model, x = tiny_vit()
    with torch.no_grad():
        ref = model(x)
    cfg = dict(type=name, w_bits=8, a_bits=8)
    if name == 'QHyViT':
        cfg['range_method'] = 'minmax'  # the shrink-grid search is slow on CPU; its choice logic is the same
    sites, method, summary = quantize(model, TimmViTAdapter(), x, cfg)
    by_role = summary['quantizers_by_role'] if 'quantizers_by_role' in summary else None
    if by_role is None:  # NoisyQuant reports its base recipe's summary
        from quant_hooks.methods.recipe import quantizers_by_role
        by_role = quantizers_by_role(sites)
    for role, cls in RECIPES[name].items():
        assert cls in by_role[role], (role, by_role[role])
    if name != 'FQViT':
        assert 'attn_logits' not in by_role, 'the softmax input stays in float'
    with torch.no_grad():
        out = model(x)
    assert not torch.equal(out, ref)
    assert cosine(out, ref) > 0.9
    set_quant_enabled(sites, False)
    with torch.no_grad():
        assert torch.allclose(model(x), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert method.describe()['type'] == name


def _max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_repq_reparameterization_keeps_the_float_timm_vit_and_swin():
    for build, adapter, x in (
        (lambda: tiny_vit()[0], TimmViTAdapter(), tiny_vit()[1]),
        (lambda: timm.create_model('swin_tiny_patch4_window7_224', img_size=56, depths=(1, 1), num_heads=(2, 4),
                                   embed_dim=32, num_classes=10).eval(), TimmSwinAdapter(), torch.randn(4, 3, 56, 56))):
        torch.manual_seed(0)
        model = build()
        with torch.no_grad():
            ref = model(x)
        sites, method, summary = quantize(model, adapter, x, dict(type='RepQViT', w_bits=4, a_bits=4))
        rep = summary['reparameterized']
        assert rep['layernorms'] >= 4 and not rep['skipped'], rep
        set_quant_enabled(sites, False)
        with torch.no_grad():
            assert _max_rel(model(x), ref) < 1e-5
        # the consumer's input quantizer is layer-wise now, and equals the channel-wise one on the original input
        site = next(s for s in sites if s.norm is not None)
        assert site.module.input_quantizer.scale.dim() == 0


def _capture_input(module, fn):
    seen = {}
    h = module.register_forward_pre_hook(lambda m, a: seen.setdefault('x', a[0].detach().clone()))
    fn()
    h.remove()
    return seen['x']


def test_repq_layer_wise_codes_equal_the_channel_wise_ones():
    """x'/Δ̃ + z̃ on the reparameterized LayerNorm output equals x/Δ_c + z_c on the original one."""
    model, x = tiny_vit()
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    qkv = next(s for s in sites if s.name == 'blocks.0.attn.qkv')
    original = _capture_input(qkv.module, lambda: model(x))
    method = build_method(dict(type='RepQViT', w_bits=8, a_bits=4, reparameterize=False))
    method.quantize(sites, lambda: run_batches(adapter, model, [x]))
    per_channel = qkv.module.input_quantizer
    codes_c = per_channel.quantize(original)
    scale_c, zp_c = per_channel.scale.clone(), per_channel.zero_point.clone()

    model2, _ = tiny_vit()
    sites2 = adapter.prepare(model2)
    method2 = build_method(dict(type='RepQViT', w_bits=8, a_bits=4))
    method2.quantize(sites2, lambda: run_batches(adapter, model2, [x]))
    qkv2 = next(s for s in sites2 if s.name == 'blocks.0.attn.qkv')
    set_quant_enabled(sites2, False)
    rep_input = _capture_input(qkv2.module, lambda: model2(x))
    set_quant_enabled(sites2, True)
    codes_l = qkv2.module.input_quantizer.quantize(rep_input)
    r = scale_c.flatten() / scale_c.flatten().mean()
    assert torch.allclose(rep_input, original / r - (zp_c.flatten().mean().round() - zp_c.flatten()) * scale_c.mean(),
                          atol=1e-4)
    assert (codes_l != codes_c).float().mean() < 1e-3, 'rounding ties aside, the codes are the same'


def test_repq_reparameterization_keeps_mmdet_swin_with_window_padding():
    """mmdet's Swin-T Mask R-CNN backbone; a 80x112 input gives 20x28 / 10x14 grids, padded to windows of 7."""
    model = build_detector(load_model_cfg('mask_rcnn_swin_t_1x'))
    x = torch.randn(1, 3, 80, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.backbone(x)
    adapter = MMDetSwinAdapter()
    sites = adapter.prepare(model)
    method = build_method(dict(type='RepQViT', w_bits=4, a_bits=4))
    summary = method.quantize(sites, lambda: _backbone_calib(model, x))
    assert summary['reparameterized']['layernorms'] == 12 * 2 + 3 and not summary['reparameterized']['skipped']
    assert any(k.endswith('attn.pad_value') for k in method.model_state_keys)
    set_quant_enabled(sites, False)
    with torch.no_grad():
        out = model.backbone(x)
    for o, r in zip(out, ref):
        assert _max_rel(o, r) < 1e-5


def _backbone_calib(model, x):
    with torch.no_grad():
        model.backbone(x)
    return 1


def test_repq_reparameterization_keeps_vitdet_with_window_padding():
    model = build_detector(load_model_cfg('vitdet_mask_rcnn_vit_tiny'))
    x = torch.randn(1, 3, 144, 176, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.backbone(x)
    sites = ViTDetAdapter().prepare(model)
    method = build_method(dict(type='RepQViT', w_bits=4, a_bits=4))
    method.quantize(sites, lambda: _backbone_calib(model, x))
    set_quant_enabled(sites, False)
    with torch.no_grad():
        out = model.backbone(x)
    for o, r in zip(out, ref):
        assert _max_rel(o, r) < 1e-5


def test_repq_state_round_trip_restores_the_rewritten_model(tmp_path):
    model, x = tiny_vit()
    sites, method, _ = quantize(model, TimmViTAdapter(), x, dict(type='RepQViT', w_bits=4, a_bits=4))
    with torch.no_grad():
        want = model(x)
    path = tmp_path / 'state.pth'
    save_quantizer_state(model, str(path), model_keys=method.model_state_keys)
    fresh, _ = tiny_vit()
    sites2 = TimmViTAdapter().prepare(fresh)
    build_method(dict(type='RepQViT', w_bits=4, a_bits=4)).assign(sites2)
    load_quantizer_state(fresh, str(path))
    with torch.no_grad():
        assert torch.equal(fresh(x), want)


def test_noisyquant_search_never_worse_and_folds_into_the_bias():
    model, x = tiny_vit()
    sites, method, summary = quantize(model, TimmViTAdapter(), x,
                                      dict(type='NoisyQuant', base=dict(type='PTQ4ViT', w_bits=6, a_bits=6)))
    assert summary['noisy_sites'] == 8
    for name, res in summary['noise_search'].items():
        assert res['mse'] <= res['plain_mse'], name
    assert any(res['noise_range'] > 0 for res in summary['noise_search'].values())
    fc2 = next(s for s in sites if s.name == 'blocks.0.mlp.fc2').module
    assert fc2.input_quantizer.bias_folded


def test_noisyquant_search_reads_the_inputs_kept_during_calibration():
    """The noise search reuses the float inputs seen in calibration (no pass of its own) and chooses exactly what
    it chooses on inputs captured in a separate float pass (what it does when the base recipe rewrote the model
    after calibration)."""
    results, passes = [], []
    for recapture in (False, True):
        model, x = tiny_vit()
        adapter = TimmViTAdapter()
        sites = adapter.prepare(model)
        method = build_method(dict(type='NoisyQuant', base=dict(type='PTQ4ViT'), w_bits=6, a_bits=6))
        if recapture:  # what a base that rewrites the model gets
            method.base.model_state_keys.append('forced')
        calls = []
        summary = method.quantize(sites, lambda: calls.append(1) or run_batches(adapter, model, [x[:2], x[2:]]))
        passes.append(len(calls) - summary['calibration_passes'])
        results.append({k: {f: v for f, v in r.items() if f != 'seconds'} for k, r in summary['noise_search'].items()})
    assert passes == [0, 1]
    assert results[0] == results[1]


def test_adfq_static_post_ln_and_thresholds():
    model, x = tiny_vit()
    sites, method, summary = quantize(model, TimmViTAdapter(), x,
                                      dict(type='ADFQViT', w_bits=8, a_bits=8, post_ln_granularity='per_token_static',
                                           outlier_threshold=1.0, fc1_outlier_threshold=2.0))
    qkv = next(s for s in sites if s.name == 'blocks.0.attn.qkv').module.input_quantizer
    fc1 = next(s for s in sites if s.name == 'blocks.0.mlp.fc1').module.input_quantizer
    assert not qkv.dynamic and qkv.threshold == 1.0 and fc1.threshold == 2.0
    assert qkv.scale.shape[0] == 17, 'one scale per token position (16 patches + class token)'
    ratios = summary['outlier_ratio']
    assert set(ratios) >= {'blocks.0.attn.qkv:input', 'blocks.0.mlp.fc1:input'}
    assert all(0 < r < 1 for r in ratios.values())


def test_qhyvit_on_a_hybrid_records_bridges_and_keeps_grouped_convs_channel_wise():
    torch.manual_seed(0)
    model = timm.create_model('mobilevit_xxs', num_classes=10).eval()
    x = torch.randn(4, 3, 64, 64)
    sites, method, summary = quantize(model, TimmHybridAdapter(), x,
                                      dict(type='QHyViT', w_bits=8, a_bits=8, range_method='minmax'))
    assert summary['bridges'] and all(summary['bridges'].values())
    assert sum(summary['choices'].values()) > 0
    grouped = [s for s in sites if s.kind == 'conv' and s.module.groups > 1]
    assert grouped and all(s.module.input_quantizer.granularities == ('per_channel',) for s in grouped)


@pytest.mark.parametrize('cfg, message', [
    (dict(type='ADFQViT', post_ln_granularity='per_head'), r"post_ln_granularity='per_head' is invalid"),
    (dict(type='ADFQViT', outlier_threshold=-1), r'outlier_threshold=-1 is invalid'),
    (dict(type='NoisyQuant', base=dict(type='NoisyQuant')), r"base.type='NoisyQuant' is invalid"),
    (dict(type='NoisyQuant', roles=['nope']), r"roles \['nope'\] are invalid"),
    (dict(type='FQViT', softmax_bits=1), r'softmax_bits=1 is invalid'),
    (dict(type='QHyViT', max_samples=8), r'max_samples=8 is invalid: allowed values are None .* integers >= 16'),
    (dict(type='MinMax', max_samples='all'), r"max_samples='all' is invalid"),
    (dict(type='NoisyQuant', max_samples=0), r'max_samples=0 is invalid'),
    (dict(type='NoisyQuant', search_ranges=[0.5, -1]), r'search_ranges=\[0.5, -1\] is invalid: allowed values are '
                                                        r'None or a non-empty list of finite numbers >= 0'),
    (dict(type='NoisyQuant', search_means=[]), r'search_means=\[\] is invalid'),
    (dict(type='NoisyQuant', search_means='abc'), r"search_means='abc' is invalid"),
    (dict(type='NoisyQuant', search_ranges='12'), r"search_ranges='12' is invalid"),
])
def test_bad_recipe_settings_are_named(cfg, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        build_method(cfg)


def test_repq_state_round_trip_with_a_bias_added_to_a_layer_built_without_one(tmp_path):
    """timm Swin's patch-merging reduction has no bias: the reparameterization adds one, and loading the state into
    a fresh model adds it again."""
    def swin():
        torch.manual_seed(0)
        return timm.create_model('swin_tiny_patch4_window7_224', img_size=56, depths=(1, 1), num_heads=(2, 4),
                                 embed_dim=32, num_classes=10).eval()
    x = torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    model = swin()
    sites, method, _ = quantize(model, TimmSwinAdapter(), x, dict(type='RepQViT', w_bits=4, a_bits=4))
    assert 'layers.1.downsample.reduction.bias' in method.model_state_keys
    with torch.no_grad():
        want = model(x)
    path = tmp_path / 'state.pth'
    save_quantizer_state(model, str(path), model_keys=method.model_state_keys)
    fresh = swin()
    sites2 = TimmSwinAdapter().prepare(fresh)
    assert fresh.get_submodule('layers.1.downsample.reduction').bias is None
    build_method(dict(type='RepQViT', w_bits=4, a_bits=4)).assign(sites2)
    load_quantizer_state(fresh, str(path))
    with torch.no_grad():
        assert torch.equal(fresh(x), want)


def _act_quantizers(sites):
    from quant_hooks.methods import iter_quantizers
    for _, _, q in iter_quantizers(sites, weights=False):
        yield getattr(q, 'quantizer', q)  # NoisyQuant's wrapper: the base quantizer inside


def test_max_samples_is_off_by_default_and_reaches_every_sampling_activation_quantizer():
    """``max_samples`` on a recipe samples every activation search that can (recorded in the method's description
    and the search summary); weight searches stay exact; without it every search is exact."""
    model, x = tiny_vit()
    sites, method, summary = quantize(model, TimmViTAdapter(), x, dict(type='PTQ4ViT', w_bits=6, a_bits=6))
    assert 'max_samples' not in method.describe()
    assert all(v['sampled'] == 0 for v in summary['quantizer_searches'].values())
    exact = _scales(sites)

    model, x = tiny_vit()
    sites, method, summary = quantize(model, TimmViTAdapter(), x,
                                      dict(type='PTQ4ViT', w_bits=6, a_bits=6, max_samples=64))
    assert method.describe()['max_samples'] == 64
    acts = list(_act_quantizers(sites))
    assert acts and all(q.max_samples == 64 for q in acts)
    from quant_hooks.methods import iter_quantizers
    assert all(getattr(q, 'max_samples', None) is None for _, _, q in iter_quantizers(sites, weights=True))
    sampled = sum(v['sampled'] for v in summary['quantizer_searches'].values())
    assert sampled == len(acts)
    scored = [q.describe() for q in acts]
    assert all(not d['exact'] for d in scored)
    sampled_scales = _scales(sites)
    assert sampled_scales.keys() == exact.keys()
    assert any(not torch.equal(sampled_scales[k], exact[k]) for k in exact), \
        'scoring 64 values per tensor picks other scales somewhere'


def _scales(sites):
    return {(s.name, i): q.scale.clone() for s in sites for i, q in enumerate(_act_quantizers([s]))
            if isinstance(getattr(q, 'scale', None), torch.Tensor)}


def test_max_samples_keeps_a_recipe_setting_and_skips_quantizers_without_it():
    from quant_hooks.methods.base import with_max_samples
    cfg = dict(type='noisy', seed=0, quantizer=dict(type='uniform', bits=4, range_method='mse'))
    out = with_max_samples(cfg, 256)
    assert 'max_samples' not in out, 'the noisy wrapper takes no max_samples'
    assert out['quantizer']['max_samples'] == 256
    assert cfg['quantizer'].get('max_samples') is None, 'the given config is not changed'
    assert with_max_samples(dict(type='uniform', bits=4, max_samples=32), 256)['max_samples'] == 32
    assert with_max_samples(cfg, None) is cfg


def test_noisyquant_passes_max_samples_to_its_base_and_records_its_grids():
    model, x = tiny_vit()
    sites, method, summary = quantize(
        model, TimmViTAdapter(), x,
        dict(type='NoisyQuant', base=dict(type='PTQ4ViT'), w_bits=6, a_bits=6, max_samples=64,
             search_ranges=[0, 0.5, 1], search_means=[-0.5, 0, 0.5]))
    d = method.describe()
    assert d['max_samples'] == 64 and d['base']['max_samples'] == 64
    assert d['search_ranges'] == [0.0, 0.5, 1.0] and d['search_means'] == [-0.5, 0.0, 0.5]
    noisy = [s.module.input_quantizer for s in sites if type(getattr(s.module, 'input_quantizer', None)).__name__
             == 'NoisyQuantizer']
    assert noisy and all(q.quantizer.max_samples == 64 for q in noisy)
    assert all(r['noise_range'] in (0.0, 0.5, 1.0) and r['evaluated'] <= 6 for r in summary['noise_search'].values())
    # 64 values are less than one token (192 or 768 channels): one token of each of the 2 kept inputs is scored
    assert all(r['values'] == 2 * s.module.in_features for s in sites
               for n, r in summary['noise_search'].items() if n == s.name)


def test_strided_tokens_keep_every_kth_row_within_the_budget():
    from quant_hooks.methods.noisyquant import _strided_tokens
    x = torch.randn(2, 17, 8)
    rows = x.reshape(34, 8)
    assert torch.equal(_strided_tokens(x, 100), rows[::3])  # 12 rows of 8 = 96 values <= 100
    assert torch.equal(_strided_tokens(x, 4), rows[::34])  # one row at least
    assert torch.equal(_strided_tokens(x, 10_000), rows)
    full = _strided_tokens(x, None)
    assert torch.equal(full, x) and full.data_ptr() != x.data_ptr()
