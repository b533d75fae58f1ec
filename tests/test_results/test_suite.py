"""Suite grids: expansion and validation; an interrupted suite resumes and runs only what is missing."""
from __future__ import annotations

import pytest
import yaml
from tiny_runs import TINY_CONFIG, TINY_OPTIONS_DICT, load_tool

import quant_hooks.runs
from quant_hooks.results import ResultStore
from quant_hooks.results.suite import SuiteError, expand_grid


def test_expand_grid_order_and_options():
    grid = dict(name='g', models=[dict(name='m', config='c.py', options={'a.b': 1})],
                methods=[dict(type='MinMax'), dict(type='MinMax', name='mm_token', a_granularity='per_token')],
                bits=[8, [4, 8]], seeds=[0, 1], scopes=['backbone'])
    runs = expand_grid(grid)
    assert [r.label for r in runs][:4] == ['m_MinMax_w8a8_backbone_seed0', 'm_MinMax_w8a8_backbone_seed1',
                                           'm_MinMax_w4a8_backbone_seed0', 'm_MinMax_w4a8_backbone_seed1']
    assert len(runs) == 8 and runs[-1].label == 'm_mm_token_w4a8_backbone_seed1'
    assert runs[-1].options == {
        'a.b': 1, 'quant_method': dict(type='MinMax', a_granularity='per_token', w_bits=4, a_bits=8),
        'quant_calibration.seed': 1, 'quant_adapter.scope': 'backbone', 'model_name': 'm',
        'results_extra': dict(suite='g', method_name='mm_token')}


@pytest.mark.parametrize('change,message', [
    (dict(models=[]), "suite field 'models' must be a non-empty list"),
    (dict(models=None), "suite field 'models' is missing"),
    (dict(methods=[dict(type='MinMax', w_bits=4)]), 'methods\\[0\\] sets w_bits'),
    (dict(bits=[[4, 8, 2]]), 'bits\\[0\\]=\\[4, 8, 2\\] is invalid'),
    (dict(seeds=['a']), "seeds\\[0\\]='a' is invalid"),
    (dict(launcher='slurm'), "launcher='slurm' is invalid: allowed values are \\['none', 'pytorch'\\]"),
    (dict(colour=1), "suite fields \\['colour'\\] are invalid"),
    (dict(methods=[dict(type='MinMax'), dict(type='MinMax')]), 'repeated runs'),
])
def test_bad_grids_name_the_field(change, message):
    grid = dict(models=[dict(name='m', config='c.py')], methods=[dict(type='MinMax')], bits=[8])
    grid.update(change)
    if grid.get('models') is None:
        grid.pop('models')
    with pytest.raises(SuiteError, match=message):
        expand_grid(grid)


@pytest.mark.slow
def test_interrupted_suite_resumes_with_only_the_missing_runs(tmp_path, monkeypatch):
    options = dict(TINY_OPTIONS_DICT)
    grid = dict(name='resume', models=[dict(name='deit', config=TINY_CONFIG, options=options)],
                methods=[dict(type='MinMax')], bits=[8, 6, 4], seeds=[0], eval_float=False)
    suite = tmp_path / 'suite.yaml'
    suite.write_text(yaml.safe_dump(grid))
    store = tmp_path / 'r.sqlite'
    argv = [str(suite), '--store', str(store), '--work-dir', str(tmp_path / 'runs')]
    real = quant_hooks.runs.run_quant_test
    calls = []

    def interrupted(cfg, *args, **kwargs):
        calls.append(cfg.quant_method['w_bits'])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second run starts
        return real(cfg, *args, **kwargs)

    tool = load_tool('quant_suite')
    monkeypatch.setattr(quant_hooks.runs, 'run_quant_test', interrupted)
    with pytest.raises(KeyboardInterrupt):
        tool.main(argv)
    with ResultStore(store) as s:
        assert [r['w_bits'] for r in s.records()] == [8]

    calls.clear()
    monkeypatch.setattr(quant_hooks.runs, 'run_quant_test', lambda cfg, *a, **k: calls.append(
        cfg.quant_method['w_bits']) or real(cfg, *a, **k))
    assert tool.main(argv) == 0
    assert calls == [6, 4]
    with ResultStore(store) as s:
        records = s.records()
    assert [r['w_bits'] for r in records] == [8, 6, 4]
    assert {r['model'] for r in records} == {'deit'} and all(r['extra'] == {'suite': 'resume'} for r in records)
    assert len({r['config_hash'] for r in records}) == 3

    calls.clear()
    assert tool.main(argv) == 0 and calls == []  # everything stored: nothing runs


def test_python_config_grid(tmp_path):
    grid = tmp_path / 'grid.py'
    grid.write_text("name = 'py'\nmodels = [dict(name='m', config='c.py')]\nmethods = [dict(type='OMSE')]\n"
                    "bits = [4, (4, 8)]\nseeds = [0, 1]\n")
    runs = expand_grid(load_tool('quant_suite').load_grid(str(grid)))
    assert [r.label for r in runs] == ['m_OMSE_w4a4_seed0', 'm_OMSE_w4a4_seed1', 'm_OMSE_w4a8_seed0',
                                       'm_OMSE_w4a8_seed1']
