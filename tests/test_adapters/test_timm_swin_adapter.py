"""TimmSwinAdapter: sites per role from the architecture, bit-exact float, network order."""
from __future__ import annotations

import torch

from quant_hooks.adapters import TimmSwinAdapter
from quant_hooks.models import TimmClassifier
from quant_hooks.sites import count_roles

from tests.test_adapters.timm_adapter_checks import check_exact_and_quantizable


def test_swin_sites():
    depths = (1, 2, 2, 1)
    torch.manual_seed(0)
    model = TimmClassifier('swin_tiny_patch4_window7_224', model_kwargs=dict(
        img_size=64, window_size=4, embed_dim=16, depths=depths, num_heads=(1, 2, 2, 4)))
    sites = check_exact_and_quantizable(model, TimmSwinAdapter(), torch.randn(2, 3, 64, 64))
    blocks, merges = sum(depths), len(depths) - 1
    assert count_roles(sites) == {
        'embed': 1, 'post_ln': 2 * blocks + merges, 'q': blocks, 'k': blocks, 'attn_logits': blocks, 'post_softmax': blocks, 'v': blocks,
        'attn_out': blocks, 'post_gelu': blocks, 'generic': 1, 'weight': 1 + 4 * blocks + merges + 1}
    merge_sites = [s.name for s in sites if s.name.endswith('downsample.reduction')]
    assert merge_sites == [f'model.layers.{i}.downsample.reduction' for i in (1, 2, 3)]
    assert 'first' in sites[0].tags and sites[-1].name == 'model.head.fc' and 'last' in sites[-1].tags
    # shifted windows (masked attention) are covered: block 1 of stage 1 shifts
    assert model.model.layers[1].blocks[1].attn_mask is not None
