"""benchmarks/speed_suite.py stores its results as records of task speed (the processes benchmark, 2 processes)."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from tiny_runs import REPO

from quant_hooks.results import ResultStore, validate_record


@pytest.mark.slow
def test_processes_benchmark_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv('PYTHON', sys.executable)
    monkeypatch.setenv('PORT', str(29500 + os.getpid() % 1000))
    spec = importlib.util.spec_from_file_location('speed_suite', REPO / 'benchmarks' / 'speed_suite.py')
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    store = tmp_path / 's.sqlite'
    records = suite.main(['--store', str(store), '--benchmarks', 'processes', '--nprocs', '2',
                          '--work-dir', str(tmp_path / 'w')])
    with ResultStore(store) as s:
        stored = s.records()
    assert len(stored) == 2 and stored[1] == records[0] == validate_record(records[0])
    run, speed = stored
    assert run['world_size'] == 2 and run['launcher'] == 'pytorch' and run['task'] == 'fidelity'
    assert speed['task'] == 'speed' and speed['extra']['runs'] == {'2': run['run_id']}
    m = speed['metrics']['quant']
    assert m['speed/wall_s_2proc'] > m['speed/evaluation_s_2proc'] > 0
    assert m['speed/calibration_s_2proc'] == run['timings']['calibration_s'] and m['speed/max_metric_diff'] == 0.0
