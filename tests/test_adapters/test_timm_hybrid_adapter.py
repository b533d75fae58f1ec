"""TimmHybridAdapter: MobileViT v1 / v2 and EfficientFormer v1 / v2 sites per role, bridges from structure."""
from __future__ import annotations

import pytest
import torch
from timm.models import efficientformer as eff1
from timm.models import efficientformer_v2 as eff2
from timm.models.mobilevit import LinearTransformerBlock, MobileVitBlock, MobileVitV2Block
from torch import nn

from quant_hooks.adapters import TimmHybridAdapter
from quant_hooks.models import TimmClassifier
from quant_hooks.sites import count_roles
from tests.test_adapters.timm_adapter_checks import check_exact_and_quantizable


def count(net, types):
    return sum(isinstance(m, types) for m in net.modules())


def build(name, size, **kwargs):
    torch.manual_seed(0)
    model = TimmClassifier(name, model_kwargs=kwargs)
    return model, torch.randn(2, 3, size, size)


def bridge_groups(sites) -> dict[str, set[str]]:
    groups = {}
    for s in sites:
        for t in s.tags:
            if t.startswith('bridge_'):
                groups.setdefault(t, set()).add(s.name)
    return groups


def under(sites, *prefixes) -> set[str]:
    return {s.name for s in sites if s.name.startswith(prefixes)}


@pytest.mark.parametrize('name', ['mobilevit_xxs', 'mobilevitv2_050'])
def test_mobilevit(name):
    model, x = build(name, 64)
    net = model.model
    n_conv, n_lin = count(net, nn.Conv2d), count(net, nn.Linear)
    blocks = [(n, m) for n, m in net.named_modules() if isinstance(m, (MobileVitBlock, MobileVitV2Block))]
    n_t = sum(len(m.transformer) for _, m in blocks)
    sites = check_exact_and_quantizable(model, TimmHybridAdapter(), x)
    roles = count_roles(sites)
    if name == 'mobilevit_xxs':  # ViT blocks on unfolded patches: 4 linears + 2 matmuls each
        assert roles == {'embed': 1, 'generic': n_conv, 'post_ln': 2 * n_t, 'q': n_t, 'k': n_t, 'v': n_t,
                         'attn_logits': n_t, 'post_softmax': n_t, 'attn_out': n_t, 'post_gelu': n_t, 'weight': n_conv + n_lin}
    else:  # separable attention: 4 pointwise convs and 2 activation sites (scores, keys) per block
        assert count(net, LinearTransformerBlock) == n_t
        assert roles == {'embed': 1, 'generic': n_conv - 4 * n_t, 'post_ln': 2 * n_t, 'k': n_t,
                         'attn_logits': n_t, 'post_softmax': n_t, 'attn_out': n_t, 'post_gelu': n_t, 'weight': n_conv + n_lin}
    # each MobileViT block hands over twice: local convs -> first transformer, last transformer -> projection
    expected = []
    for b, m in blocks:
        p, last = f'model.{b}', len(m.transformer) - 1
        expected.append(under(sites, f'{p}.conv_kxk', f'{p}.conv_1x1', f'{p}.transformer.0.'))
        expected.append(under(sites, f'{p}.transformer.{last}.', f'{p}.conv_proj', f'{p}.conv_fusion'))
    groups = bridge_groups(sites)
    assert [groups[f'bridge_{k}'] for k in range(len(groups))] == expected
    assert {s.name for s in sites if 'bridge' in s.tags} == set().union(*expected)
    assert all(('conv' in s.tags) != ('transformer' in s.tags) for s in sites if 'last' not in s.tags)


def test_efficientformer_v1():
    model, x = build('efficientformer_l1', 224, depths=(1, 1, 2, 3), embed_dims=(8, 16, 24, 32))
    net = model.model
    n_t = count(net, eff1.MetaBlock1d)
    n_conv, n_lin = count(net, nn.Conv2d), count(net, nn.Linear)
    sites = check_exact_and_quantizable(model, TimmHybridAdapter(), x)
    assert count_roles(sites) == {'embed': 1, 'generic': n_conv - 1 + 2, 'post_ln': 2 * n_t, 'q': n_t, 'k': n_t,
                                  'v': n_t, 'attn_logits': n_t, 'post_softmax': n_t, 'attn_out': n_t, 'post_gelu': n_t,
                                  'weight': n_conv + n_lin}
    # the only hand-over is at Flat: the block before it (NCHW) and the block after it (tokens)
    blocks = list(net.stages[3].blocks)
    flat = next(i for i, b in enumerate(blocks) if isinstance(b, eff1.Flat))
    groups = bridge_groups(sites)
    before, after = f'model.stages.3.blocks.{flat - 1}.', f'model.stages.3.blocks.{flat + 1}.'
    assert groups == {'bridge_0': under(sites, before, after)}
    assert {s.name for s in sites if 'last' in s.tags} == {'model.head', 'model.head_dist'}


def test_efficientformer_v2():
    model, x = build('efficientformerv2_s0', 64, img_size=64)
    net = model.model
    n_attn, n_down = count(net, eff2.Attention2d), count(net, eff2.Attention2dDownsample)
    n_conv, n_lin = count(net, nn.Conv2d), count(net, nn.Linear)
    sites = check_exact_and_quantizable(model, TimmHybridAdapter(), x)
    roles = count_roles(sites)
    n_mm = n_attn + n_down
    assert roles['q'] == roles['k'] == roles['v'] == roles['attn_logits'] == n_mm
    assert roles['post_softmax'] == n_mm  # talking-head conv input (Attention2d) / attn@v input (downsample)
    assert roles['post_gelu'] == n_mm + 2 * n_attn  # attention proj; MLP mid + fc2 of attention blocks
    assert roles['embed'] == 1 and roles['weight'] == n_conv + n_lin
    assert sum(roles.values()) - roles['weight'] == n_conv + n_lin + 2 * 2 * n_mm + n_mm  # + softmax logits
    # reference: walk stem, downsamples and blocks; attention units differ in form from conv ones
    units = []
    for i, stage in enumerate(net.stages):
        if isinstance(stage.downsample, eff2.Downsample):
            units.append((f'model.stages.{i}.downsample.', stage.downsample.attn is not None))
        units += [(f'model.stages.{i}.blocks.{j}.', b.token_mixer is not None) for j, b in enumerate(stage.blocks)]
    expected = [under(sites, a[0], b[0]) for a, b in zip(units, units[1:]) if a[1] != b[1]]
    groups = bridge_groups(sites)
    assert len(expected) == 3 and [groups[f'bridge_{k}'] for k in range(len(groups))] == expected


def test_unsupported_model_is_a_clear_error():
    model = TimmClassifier('vit_tiny_patch16_224', model_kwargs=dict(img_size=32, depth=1))
    with pytest.raises(TypeError, match=r"TimmHybridAdapter supports \['MobileViT', 'EfficientFormer'"):
        TimmHybridAdapter().prepare(model)
