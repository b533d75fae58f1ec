"""Sensitivity: units from a record, ranking by metric lost, and the tool end to end on the tiny default run."""
from __future__ import annotations

import pytest
from tiny_runs import load_tool

from quant_hooks.results import ResultStore
from quant_hooks.results.sensitivity import block_of, rank, sensitivity_units, to_csv


def test_units_by_role_block_and_unit():
    record = dict(tensors_by_role={'weight': 6, 'q': 1, 'post_ln': 2},
                  blocks=['backbone.patch_embed', 'backbone.stages.0.blocks.0.attn', 'backbone.stages.0.blocks.0.ffn',
                          'backbone.stages.0.blocks.1.attn', 'backbone.stages.0.downsample', 'neck'])
    assert sensitivity_units(record, 'role') == {'post_ln': {'roles': ['post_ln']}, 'q': {'roles': ['q']},
                                                 'weight': {'roles': ['weight']}}
    assert sensitivity_units(record, 'block') == {
        'backbone.patch_embed': {'blocks': ['backbone.patch_embed']},
        'backbone.stages.0.blocks.0': {'blocks': ['backbone.stages.0.blocks.0.attn',
                                                  'backbone.stages.0.blocks.0.ffn']},
        'backbone.stages.0.blocks.1': {'blocks': ['backbone.stages.0.blocks.1.attn']},
        'backbone.stages.0': {'blocks': ['backbone.stages.0.downsample']},
        'neck': {'blocks': ['neck']}}
    assert list(sensitivity_units(record, 'unit'))[1] == 'backbone.stages.0.blocks.0.attn'
    assert block_of('model.blocks.11.mlp') == 'model.blocks.11' and block_of('head') == 'head'
    with pytest.raises(ValueError, match="by='layer' is invalid"):
        sensitivity_units(record, 'layer')


def test_rank_by_metric_lost():
    ranked = rank(43.0, {'q': 42.5, 'post_softmax': 30.0, 'weight': 41.0, 'k': None})
    assert [(s.unit, s.lost) for s in ranked] == [('post_softmax', 13.0), ('weight', 2.0), ('q', 0.5), ('k', None)]
    assert to_csv(ranked).splitlines()[1] == '1,post_softmax,30.0,13.0'
    no_float = rank(None, {'a': 20.0, 'b': 9.0})  # SQNR: no float value, the lowest ranks first
    assert [(s.unit, s.lost) for s in no_float] == [('b', None), ('a', None)]


@pytest.mark.slow
def test_sensitivity_tool_by_block(tmp_path):
    store = tmp_path / 's.sqlite'
    out = load_tool('sensitivity').main(['configs/regression/deit_t_tiny_fidelity_minmax_w4a4.py', '--by', 'block',
                                         '--store', str(store), '--work-dir', str(tmp_path / 'w')])
    ranked = out['ranked']
    assert [s.unit for s in ranked] == sorted([s.unit for s in ranked], key=lambda u: next(
        s.value for s in ranked if s.unit == u))
    assert {s.unit for s in ranked} == {'model.blocks.0', 'model.patch_embed'}
    full_sqnr = out['full']['metrics']['quant']['feature/sqnr_db']
    assert all(s.value > full_sqnr for s in ranked)  # quantizing a part loses less than quantizing everything
    with ResultStore(store) as s:
        records = s.records()
    assert len(records) == 3 and records[0]['extra'] == {'sensitivity': 'all'}
    assert records[1]['method']['only'] == {'blocks': ['model.blocks.0.attn', 'model.blocks.0.mlp']}
    assert records[1]['num_sites'] == records[0]['num_sites']
    with open(out['csv']) as f:
        assert f.read().splitlines()[1:] == [f'{i},{s.unit},{round(s.value, 6)!r},' for i, s in enumerate(ranked, 1)]
    for path in [out['markdown'], *out['plots']]:
        with open(path, 'rb') as f:
            assert len(f.read()) > 100
