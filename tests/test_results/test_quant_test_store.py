"""tools/quant_test.py fills the full result record and appends it to a results store."""
from __future__ import annotations

import json

import pytest
from e2e_helpers import load_quant_test_tool
from tiny_runs import REPO, TINY_CONFIG, TINY_OPTIONS

from quant_hooks.results import ResultStore, StoreError, validate_record


@pytest.mark.slow
def test_quant_test_record_loads_back_identically(tmp_path):
    store_path = tmp_path / 'results.sqlite'
    tool = load_quant_test_tool()
    record = tool.main([str(REPO / TINY_CONFIG), '--work-dir', str(tmp_path / 'run'), '--store', str(store_path),
                        '--cfg-options', *TINY_OPTIONS, 'results_extra.label=first'])
    on_disk = json.loads((tmp_path / 'run' / 'quant_results.json').read_text())
    with ResultStore(store_path) as store:
        stored = store.records()
    assert stored == [record] and on_disk == record
    validate_record(record)
    assert record['task'] == 'classification' and record['model'] == 'deit_t_imagenet_tiny'
    assert (record['w_bits'], record['a_bits'], record['method']['type']) == (8, 8, 'MinMaxPTQ')
    assert set(record['metrics']) == {'float', 'quant'} and 'accuracy/top1' in record['metrics']['quant']
    assert record['calibration']['num_images'] == 4 and len(record['calibration']['images']) == 4
    assert record['calibration']['split'] == 'calib.txt' and record['calibration']['seed'] == 0
    assert record['timings']['calibration_s'] > 0 and record['timings']['evaluation_s'] > 0
    assert record['peak_memory']['cpu_rss_mb'] > 0 and record['versions']['torch']
    assert record['git']['commit'] is None or len(record['git']['commit']) == 40
    assert record['extra'] == {'label': 'first'} and record['checkpoint_sha256'] is None

    # same config and seed: the same hash and the same numbers (results_extra does not enter the hash)
    again = tool.main([str(REPO / TINY_CONFIG), '--work-dir', str(tmp_path / 'run2'), '--store', str(store_path),
                       '--no-float', '--cfg-options', *TINY_OPTIONS])
    assert again['config_hash'] == record['config_hash'] and again['run_id'] != record['run_id']
    assert again['metrics']['quant'] == record['metrics']['quant']
    with ResultStore(store_path) as store:
        assert store.records() == [record, again]


@pytest.mark.slow
def test_quant_test_refuses_a_corrupt_store_before_evaluating(tmp_path):
    bad = tmp_path / 'bad.sqlite'
    bad.write_bytes(b'this is not a sqlite file' * 10)
    tool = load_quant_test_tool()
    with pytest.raises(StoreError, match='corrupt'):
        tool.main([str(REPO / TINY_CONFIG), '--work-dir', str(tmp_path / 'run'), '--store', str(bad),
                   '--cfg-options', *TINY_OPTIONS])
    assert not (tmp_path / 'run' / 'quant_results.json').exists()
    assert bad.read_bytes() == b'this is not a sqlite file' * 10
