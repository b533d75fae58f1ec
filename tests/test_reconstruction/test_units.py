"""Reconstruction units: module / block levels, bridge groups of the hybrids, explicit names."""
from __future__ import annotations

import pytest
import timm

from quant_hooks.adapters import TimmHybridAdapter
from quant_hooks.reconstruction import find_units

from recon_helpers import tiny_vit


def test_module_and_block_units_of_a_vit():
    net, sites, _ = tiny_vit(depth=2)
    modules = find_units(net, sites, 'module')
    assert [(u.name, u.kind, len(u.sites)) for u in modules] == [
        ('patch_embed', 'module', 1), ('blocks.0.attn', 'module', 5), ('blocks.0.mlp', 'module', 2),
        ('blocks.1.attn', 'module', 5), ('blocks.1.mlp', 'module', 2), ('head', 'module', 1)]
    blocks = find_units(net, sites, 'block')
    assert [(u.name, u.kind, len(u.sites)) for u in blocks] == [
        ('patch_embed', 'module', 1), ('blocks.0', 'block', 7), ('blocks.1', 'block', 7), ('head', 'module', 1)]
    assert blocks[1].modules == [net.blocks[0]]
    # every site belongs to exactly one unit, in network order
    assert [s.name for u in blocks for s in u.sites] == [s.name for s in sites]


def test_explicit_unit_names_and_errors():
    net, sites, _ = tiny_vit(depth=2)
    units = find_units(net, sites, 'module', names=['blocks.1', 'blocks.0.mlp'])
    assert [u.name for u in units] == ['blocks.0.mlp', 'blocks.1']  # network order
    nested = find_units(net, sites, names=['blocks.0', 'blocks.0.attn'])
    assert [(u.name, len(u.sites)) for u in nested] == [('blocks.0.attn', 5), ('blocks.0', 7)]
    with pytest.raises(ValueError, match="'blocks.7' is not a module"):
        find_units(net, sites, names=['blocks.7'])
    with pytest.raises(ValueError, match="unit='layer' is invalid: allowed values are"):
        find_units(net, sites, 'layer')


def test_bridge_groups_of_hybrids():
    net = timm.create_model('mobilevit_xxs', num_classes=10).eval()
    adapter = TimmHybridAdapter()
    sites = adapter.prepare(net)
    units = find_units(net, sites, 'block', 'bridge_')
    groups = [u for u in units if u.kind == 'group']
    # the conv -> tokens -> conv hand-overs of each MobileViT block make the whole block one unit
    assert [u.name for u in groups] == ['stages.2.1', 'stages.3.1', 'stages.4.1']
    for u in groups:
        bridge_sites = [s for s in sites if 'bridge' in s.tags and s.name.startswith(u.name + '.')]
        assert bridge_sites and all(s in u.sites for s in bridge_sites)
    assert [s.name for u in units for s in u.sites] == [s.name for s in sites]
    # without groups the transformer layers are their own blocks
    plain = [u.name for u in find_units(net, sites, 'block')]
    assert 'stages.2.1.transformer.0' in plain and 'stages.2.1' not in plain

    eff = timm.create_model('efficientformer_l1', num_classes=10).eval()
    eff_sites = TimmHybridAdapter().prepare(eff)
    groups = [u for u in find_units(eff, eff_sites, 'block', 'bridge_') if u.kind == 'group']
    # the conv block, the (weightless) flatten and the first token block run as a slice of the Sequential
    assert [(u.name, u.module_names) for u in groups] == [
        ('stages.3.blocks[2:5]', ['stages.3.blocks.2', 'stages.3.blocks.3', 'stages.3.blocks.4'])]
