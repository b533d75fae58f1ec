"""benchmarks/bench_detection_speed.py runs every named recipe on the real mmdet Swin-T Mask R-CNN (tiny input)."""
from __future__ import annotations

import importlib.util
import json
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location('bench_detection_speed',
                                                  osp.join(REPO, 'benchmarks', 'bench_detection_speed.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unknown_method_names_the_allowed_values(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().parse_args(['--methods', 'nope'])
    assert "--methods 'nope'" in str(e.value) and 'adfq_vit' in str(e.value)


@pytest.mark.slow
def test_two_recipes_report_both_ratios(tmp_path, capsys):
    out = tmp_path / 'speed.json'
    result = _bench().main(['--methods', 'minmax', 'repq_vit', '--size', '128', '--num-images', '1',
                            '--eval-images', '1', '--repeats', '1', '--json', str(out)])
    assert list(result['methods']) == ['minmax', 'repq_vit']
    assert result['methods']['repq_vit']['method'] == 'RepQViT'
    for row in result['methods'].values():
        assert row['sites'] > 50 and row['inference_ratio'] > 0 and row['calibration_ratio'] > 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    printed = capsys.readouterr().out
    assert '| repq_vit' in printed and 'inference_ratio <= 1.25' in printed


def test_method_options_are_parsed_and_shown_with_the_table():
    bench = _bench()
    args = bench.parse_args(['--methods', 'qhyvit', '--method-options', 'max_samples=4096'])
    assert args.method_options == {'max_samples': 4096}
    assert bench.parse_args(['--methods', 'qhyvit']).method_options == {}
    row = dict(method='QHyViT', inference_ratio=1.0, inference_quant_s_per_image=1.0,
               inference_float_s_per_image=1.0, calibration_ratio=1.5, calibration_s=3.0, float_forwards_s=2.0)
    result = dict(bits=4, model='m', size=64, threads=1, eval_images=1, repeats=1, calibration_images=1,
                  method_options=dict(args.method_options), methods=dict(qhyvit=row))
    table = bench.format_table(result)
    assert 'method options max_samples=4096' in table.splitlines()[0]
    assert 'calibration_ratio <= 2.0: yes' in table
