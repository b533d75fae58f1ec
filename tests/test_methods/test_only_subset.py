"""PTQMethod(only=...): quantize a subset of roles / blocks, the rest stays in floating point."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quant_hooks.methods import MinMaxPTQ, iter_quantizers
from quant_hooks.nn import QuantLinear, QuantMatMul
from quant_hooks.sites import QuantSite, Role


def _sites():
    torch.manual_seed(0)
    emb = QuantLinear.from_float(nn.Linear(8, 8), 'patch_embed.proj')
    fc = QuantLinear.from_float(nn.Linear(8, 8), 'blocks.0.mlp.fc2')
    mm = QuantMatMul('blocks.0.attn.qk')
    fc1 = QuantLinear.from_float(nn.Linear(8, 8), 'blocks.1.mlp.fc1')
    return [QuantSite('patch_embed.proj', 'linear', emb, {'input': Role.EMBED, 'weight': Role.WEIGHT}, 'patch_embed'),
            QuantSite('blocks.0.mlp.fc2', 'linear', fc, {'input': Role.POST_GELU, 'weight': Role.WEIGHT},
                      'blocks.0.mlp'),
            QuantSite('blocks.0.attn.qk', 'matmul', mm, {'a': Role.Q, 'b': Role.K}, 'blocks.0.attn'),
            QuantSite('blocks.1.mlp.fc1', 'linear', fc1, {'input': Role.POST_LN, 'weight': Role.WEIGHT},
                      'blocks.1.mlp')]


def _quantized(method):
    sites = _sites()
    method.assign(sites)
    return sorted((s.name, slot) for s, slot, _ in iter_quantizers(sites))


@pytest.mark.parametrize('only,expected', [
    (None, [('blocks.0.attn.qk', 'a'), ('blocks.0.attn.qk', 'b'), ('blocks.0.mlp.fc2', 'input'),
            ('blocks.0.mlp.fc2', 'weight'), ('blocks.1.mlp.fc1', 'input'), ('blocks.1.mlp.fc1', 'weight'),
            ('patch_embed.proj', 'input'), ('patch_embed.proj', 'weight')]),
    (dict(roles=['weight']), [('blocks.0.mlp.fc2', 'weight'), ('blocks.1.mlp.fc1', 'weight'),
                              ('patch_embed.proj', 'weight')]),
    (dict(roles='q'), [('blocks.0.attn.qk', 'a')]),
    (dict(blocks=['blocks.0']), [('blocks.0.attn.qk', 'a'), ('blocks.0.attn.qk', 'b'), ('blocks.0.mlp.fc2', 'input'),
                                 ('blocks.0.mlp.fc2', 'weight')]),
    (dict(blocks=['blocks.*.mlp']), [('blocks.0.mlp.fc2', 'input'), ('blocks.0.mlp.fc2', 'weight'),
                                     ('blocks.1.mlp.fc1', 'input'), ('blocks.1.mlp.fc1', 'weight')]),
    (dict(blocks=['blocks.1.mlp'], roles=['post_ln']), [('blocks.1.mlp.fc1', 'input')]),
    (dict(blocks=['blocks.10']), []),  # blocks.1 is not inside blocks.10
])
def test_only_selects_roles_and_blocks(only, expected):
    assert _quantized(MinMaxPTQ(w_bits=4, a_bits=4, only=only)) == expected


def test_only_is_described_and_validated():
    assert MinMaxPTQ(only=dict(roles=['q'])).describe()['only'] == {'roles': ['q']}
    assert 'only' not in MinMaxPTQ().describe()
    with pytest.raises(ValueError, match=r"only.roles \['queries'\] are invalid: allowed values are"):
        MinMaxPTQ(only=dict(roles=['queries']))
    with pytest.raises(ValueError, match='give a dict with the keys roles and/or blocks'):
        MinMaxPTQ(only=dict(layers=['x']))


def test_unselected_tensors_compute_in_float():
    sites = _sites()
    MinMaxPTQ(w_bits=2, a_bits=2, only=dict(blocks=['patch_embed'])).assign(sites)
    x = torch.randn(3, 8)
    fc1 = sites[3].module
    assert torch.equal(fc1(x), torch.nn.functional.linear(x, fc1.weight, fc1.bias))
