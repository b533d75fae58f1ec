"""TimmViTAdapter: sites per role from the architecture, bit-exact float, network order."""
from __future__ import annotations

import pytest
import torch

from quant_hooks.adapters import TimmViTAdapter
from quant_hooks.models import TimmClassifier
from quant_hooks.sites import count_roles

from tests.test_adapters.timm_adapter_checks import check_exact_and_quantizable


def vit_roles(depth: int, heads: int) -> dict:
    """Per block: qkv, fc1 (post-LN); q@kᵀ; attn@v; proj; fc2. Plus patch embed and the head linears."""
    return {'embed': 1, 'post_ln': 2 * depth, 'q': depth, 'k': depth, 'attn_logits': depth, 'post_softmax': depth, 'v': depth,
            'attn_out': depth, 'post_gelu': depth, 'generic': heads, 'weight': 1 + 4 * depth + heads}


@pytest.mark.parametrize('name,kwargs,num_classes,heads', [
    ('vit_tiny_patch16_224', dict(img_size=32, depth=3), None, 1),
    ('deit_tiny_distilled_patch16_224', dict(img_size=32, depth=2), None, 2),
    ('vit_small_patch14_dinov2', dict(img_size=28, depth=2, dynamic_img_size=True), 0, 0),
])
def test_vit_sites(name, kwargs, num_classes, heads):
    torch.manual_seed(0)
    model = TimmClassifier(name, num_classes=num_classes, model_kwargs=kwargs)
    depth = len(model.model.blocks)
    size = kwargs['img_size']
    sites = check_exact_and_quantizable(model, TimmViTAdapter(), torch.randn(2, 3, size, size))
    assert count_roles(sites) == {k: v for k, v in vit_roles(depth, heads).items() if v}
    assert sites[0].name == 'model.patch_embed.proj' and 'first' in sites[0].tags
    assert [s.name for s in sites if 'last' in s.tags] == ['model.head', 'model.head_dist'][:heads]
    assert sites[2].block == 'model.blocks.0.attn' and sites[2].roles == {'a': 'q', 'b': 'k'}


def test_bare_timm_model_and_tensor_calibration():
    import timm
    net = timm.create_model('vit_tiny_patch16_224', img_size=32, depth=1).eval()
    for m in net.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = False
    adapter = TimmViTAdapter()
    sites = check_exact_and_quantizable(net, adapter, torch.randn(2, 3, 32, 32))
    assert sites[0].name == 'patch_embed.proj'


def test_wrong_model_is_a_clear_error():
    model = TimmClassifier('swin_tiny_patch4_window7_224', model_kwargs=dict(img_size=32, window_size=2, depths=(1, ),
                                                                            num_heads=(1, ), embed_dim=8))
    with pytest.raises(TypeError, match='TimmViTAdapter expects a timm VisionTransformer, got SwinTransformer'):
        TimmViTAdapter().prepare(model)
