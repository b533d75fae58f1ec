"""tools/quant_table.py: one float pass, one row per method, and --resume reads finished runs back."""
from __future__ import annotations

import json
import os.path as osp

import pytest

import tools.quant_test
from quant_hooks.runs import build_run_config, run_key
from tools.quant_table import main

MODEL = 'vitdet_mask_rcnn_vit_s14_shapes'


@pytest.fixture
def fake_quant_test(monkeypatch):
    """Stands in for tools/quant_test.main: records its calls and writes the results file a run would write."""
    calls = []

    def run(argv):
        config, work = argv[0], argv[argv.index('--work-dir') + 1]
        calls.append((osp.basename(config), '--no-float' in argv))
        bits = int(config.rsplit('_w', 1)[1][0])
        metrics = {'quant': {'coco/bbox_mAP': bits / 100, 'coco/segm_mAP': bits / 200}}
        if '--no-float' not in argv:
            metrics['float'] = {'coco/bbox_mAP': 0.5, 'coco/segm_mAP': 0.4}
        h, sha = run_key(build_run_config(config, None, work), None)
        record = dict(config=config, config_hash=h, checkpoint_sha256=sha, metrics=metrics)
        import os
        os.makedirs(work, exist_ok=True)
        with open(osp.join(work, 'quant_results.json'), 'w') as f:
            json.dump(record, f)
        return record

    monkeypatch.setattr(tools.quant_test, 'main', run)
    return calls


def test_one_float_pass_and_one_row_per_method(fake_quant_test, tmp_path):
    table = main([MODEL, '--methods', 'minmax', 'repq_vit', '--bits', 'w8a8', 'w4a4', '--work-dir', str(tmp_path)])
    assert [no_float for _, no_float in fake_quant_test] == [False, True, True, True]
    assert '| minmax | 0.500 / 0.400 | 0.080 / 0.040 | 0.040 / 0.020 |' in table
    assert '| repq_vit | 0.500 / 0.400 | 0.080 / 0.040 | 0.040 / 0.020 |' in table


def test_resume_reads_finished_runs_back(fake_quant_test, tmp_path):
    args = [MODEL, '--methods', 'minmax', 'repq_vit', '--bits', 'w8a8', '--work-dir', str(tmp_path)]
    first = main(args)
    fake_quant_test.clear()
    assert main(args + ['--resume']) == first and fake_quant_test == []
    # a results file of another config (here: edited by hand) is not taken for this run
    path = tmp_path / 'repq_vit_w8a8' / 'quant_results.json'
    record = json.loads(path.read_text())
    path.write_text(json.dumps(dict(record, config_hash='other')))
    main(args + ['--resume'])
    assert fake_quant_test == [(f'{MODEL}_repq_vit_w8a8.py', True)]


def test_unknown_method_names_the_problem(capsys):
    with pytest.raises(SystemExit):
        main([MODEL, '--methods', 'nope'])
    assert 'configs not found' in capsys.readouterr().err
