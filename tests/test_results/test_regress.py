"""Regression checks: the committed reference holds; injected drops beyond tolerance fail, within pass."""
from __future__ import annotations

import shutil

import pytest
import yaml
from fake_records import fake_record
from tiny_runs import REPO, load_tool

from quant_hooks.results import ResultStore
from quant_hooks.results.regress import (IMPROVED, OK, REGRESSION, XFAIL, XPASS, ReferenceError, check_reference,
                                         judge)

REFERENCE = REPO / 'benchmarks' / 'regression' / 'reference.yaml'


@pytest.mark.parametrize('values,ref_std,tolerance,xfail,status', [
    ([42.2], 0.0, 0.5, None, REGRESSION),  # a 1-point AP drop beyond a 0.5 tolerance
    ([42.2], 0.0, 1.5, None, OK),  # within the tolerance
    ([44.2], 0.0, 0.5, None, IMPROVED),  # beyond the tolerance upwards: reported, not failing
    ([42.2], 0.0, 0.5, 'known W4 collapse', XFAIL),
    ([43.2], 0.0, 0.5, 'known W4 collapse', XPASS),
    ([41.6, 42.8], 0.0, 0.5, None, OK),  # mean 42.2, but the seeds spread 0.85: 1 point is inside 2 spreads
    ([42.15, 42.25], 0.0, 0.5, None, REGRESSION),  # tight seeds: the same mean drop counts
])
def test_judge(values, ref_std, tolerance, xfail, status):
    check = judge('run', 'box_ap', 43.2, ref_std, values, tolerance, 2.0, xfail)
    assert check.status == status
    assert check.delta == pytest.approx(sum(values) / len(values) - 43.2)


def _baseline_store(path, drop):
    records = []
    for commit, shift in (('1' * 40, 0.0), ('2' * 40, drop)):
        for seed in (0, 1):
            records.append(fake_record(model='swin_t', seed=seed, commit=commit, quant={
                'coco/bbox_mAP': 0.432 - shift, 'coco/segm_mAP': 0.391}, float_={'coco/bbox_mAP': 0.435}))
    with ResultStore(path) as store:
        store.append(records)


@pytest.mark.parametrize('tolerance,expected', [('0.5', 1), ('1.5', 0)])
def test_baseline_commit_injected_one_point_drop(tmp_path, capsys, tolerance, expected):
    _baseline_store(tmp_path / 's.sqlite', drop=0.01)  # mmdet mAP 0.01 = 1 AP point
    argv = ['baseline', '--store', str(tmp_path / 's.sqlite'), '--baseline-commit', '1111', '--commit', '2222',
            '--tolerance', tolerance]
    assert load_tool('regress').main(argv) == expected
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if ' box_ap ' in li)
    assert line.split()[0] == ('REGRESSION' if expected else 'ok') and '-1.0000' in line


def test_reference_file_errors_name_the_field(tmp_path):
    good = dict(name='a', config='c.py', expect=[dict(metric='box_ap', value=40.0, tolerance=0.3)])
    assert check_reference(dict(runs=[good]))['runs'][0]['seeds'] == [0]
    for bad, message in [
        (dict(good, expect=[dict(metric='box_ap', value=40.0)]), r"expect\[0\] is missing the field 'tolerance'"),
        (dict(good, expect=[dict(metric='nope', value=1, tolerance=0)]), "metric 'nope' is invalid"),
        ({k: v for k, v in good.items() if k != 'config'}, "runs\\[0\\] is missing the field 'config'"),
        (dict(good, colour=1), r"fields \['colour'\] are invalid"),
        (dict(good, expect=[dict(metric='top1', value='high', tolerance=0)]), "value='high' is invalid"),
    ]:
        with pytest.raises(ReferenceError, match=message):
            check_reference(dict(runs=[bad]))


@pytest.mark.slow
def test_committed_reference_holds_and_injected_drops_fail(tmp_path, capsys):
    """The default run of the committed reference reproduces it; the same runs against a reference one point
    higher fail beyond the tolerance and pass within it (no rerun: the runs come from the store)."""
    tool = load_tool('regress')
    store, work = str(tmp_path / 'r.sqlite'), str(tmp_path / 'work')
    assert tool.main(['check', str(REFERENCE), '--store', store, '--work-dir', work]) == 0, capsys.readouterr().out
    ref = yaml.safe_load(REFERENCE.read_text())
    with ResultStore(store) as s:
        stored = s.count()
    assert stored == sum(len(r.get('seeds', [0])) for r in ref['runs'])
    run = ref['runs'][0]
    sqnr = next(e for e in run['expect'] if e['metric'] == 'sqnr')
    for tolerance, expected in ((0.5, 1), (1.5, 0)):
        sqnr.update(value=sqnr['value'] + 1.0, tolerance=tolerance)
        injected = tmp_path / f'ref_{tolerance}.yaml'
        injected.write_text(yaml.safe_dump(ref))
        sqnr['value'] -= 1.0
        capsys.readouterr()
        assert tool.main(['check', str(injected), '--store', store, '--work-dir', work, '--no-run']) == expected
        out = capsys.readouterr().out
        assert ('REGRESSION' in out) == bool(expected) and 'regress: running' not in out
    with ResultStore(store) as s:
        assert s.count() == stored


@pytest.mark.slow
def test_record_adds_and_remeasures_an_entry(tmp_path):
    tool = load_tool('regress')
    ref = tmp_path / 'reference.yaml'
    shutil.copy(REFERENCE, ref)
    store, work = str(tmp_path / 'r.sqlite'), str(tmp_path / 'work')
    config = 'configs/regression/deit_t_tiny_fidelity_minmax_w4a4.py'
    assert tool.main(['record', str(ref), '--name', 'w8', '--config', config, '--cfg-options',
                      'quant_method.w_bits=8', 'quant_method.a_bits=8', '--metrics', 'sqnr', '--tolerance', '0.2',
                      '--store', store, '--work-dir', work]) == 0
    data = yaml.safe_load(ref.read_text())
    entry = data['runs'][-1]
    assert entry['name'] == 'w8' and entry['options'] == {'quant_method.w_bits': 8, 'quant_method.a_bits': 8}
    assert entry['expect'][0]['metric'] == 'sqnr' and entry['expect'][0]['tolerance'] == 0.2
    assert entry['expect'][0]['value'] > yaml.safe_load(REFERENCE.read_text())['runs'][0]['expect'][0]['value']
    assert data['description'] and len(data['runs']) == len(yaml.safe_load(REFERENCE.read_text())['runs']) + 1
    # re-measure: same run from the store, same value, tolerance kept
    assert tool.main(['record', str(ref), '--name', 'w8', '--store', store, '--work-dir', work]) == 0
    assert yaml.safe_load(ref.read_text())['runs'][-1] == entry
