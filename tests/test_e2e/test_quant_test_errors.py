"""Bad input to tools/quant_test.py fails early with a message naming what is wrong."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from e2e_helpers import REPO, SMALL_DETECTION_OPTIONS, SWIN_TINY_CONFIG, load_quant_test_tool
from quant_hooks.quantizers import EmptyCalibrationError, QuantizerError
from quant_hooks.apis import ConfigError
from quant_hooks.utils.checkpoint import CheckpointError


@pytest.fixture(scope='module')
def tool():
    return load_quant_test_tool()


def _run(tool, tmp_path, checkpoint=None, options=()):
    argv = [str(SWIN_TINY_CONFIG)] + ([str(checkpoint)] if checkpoint else [])
    argv += ['--work-dir', str(tmp_path), '--no-float', '--cfg-options', *SMALL_DETECTION_OPTIONS, *options]
    return tool.main(argv)


def test_missing_config(tool, tmp_path):
    with pytest.raises(ConfigError, match='config file not found.*no_such_config.py'):
        tool.main([str(tmp_path / 'no_such_config.py')])


def test_missing_checkpoint(tool, tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint file not found.*missing.pth'):
        _run(tool, tmp_path, tmp_path / 'missing.pth')


@pytest.mark.slow
def test_corrupt_checkpoint(tool, tmp_path):
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'\x80\x04 this is not a checkpoint')
    with pytest.raises(CheckpointError, match='corrupt'):
        _run(tool, tmp_path, bad)


@pytest.mark.slow
def test_checkpoint_for_another_model(tool, tmp_path):
    other = tmp_path / 'other.pth'
    torch.save(dict(state_dict=torch.nn.Linear(3, 4).state_dict()), other)
    with pytest.raises(CheckpointError, match=r'does not match the model MaskRCNN[\s\S]*missing keys[\s\S]*'
                                              r'unexpected keys: bias, weight'):
        _run(tool, tmp_path, other)


@pytest.mark.slow
def test_checkpoint_with_wrong_shapes(tool, tmp_path):
    from mmengine.registry import MODELS, init_default_scope

    from quant_hooks.apis import load_config
    cfg = load_config(str(SWIN_TINY_CONFIG))
    cfg.model.roi_head.bbox_head.num_classes = 3
    init_default_scope('mmdet')
    state = MODELS.build(cfg.model).state_dict()
    path = tmp_path / 'three_classes.pth'
    torch.save(dict(state_dict=state), path)
    with pytest.raises(CheckpointError, match=r'shape mismatches: roi_head.bbox_head.fc_cls.bias: checkpoint \(4,\) '
                                              r'vs model \(81,\)'):
        _run(tool, tmp_path, path)


@pytest.mark.slow
def test_empty_calibration_set(tool, tmp_path):
    with pytest.raises(EmptyCalibrationError, match=r'calibration.num_images=0 is invalid: allowed values are '
                                                    r'integers >= 1'):
        _run(tool, tmp_path, options=['quant_calibration.num_images=0'])


@pytest.mark.slow
def test_calibration_dataset_without_images(tool, tmp_path):
    empty = tmp_path / 'empty.json'
    empty.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}')
    with pytest.raises(EmptyCalibrationError, match='calibration dataset holds no images'):
        _run(tool, tmp_path, options=[f'quant_calibration.dataset.ann_file={empty}'])


@pytest.mark.slow
@pytest.mark.parametrize('option, field, value', [('quant_method.w_bits=1', 'w_bits', 1),
                                                  ('quant_method.a_bits=17', 'a_bits', 17)])
def test_bits_out_of_range(tool, tmp_path, option, field, value):
    with pytest.raises(QuantizerError, match=rf'{field}={value} is invalid: allowed values are integers 2\.\.16'):
        _run(tool, tmp_path, options=[option])


@pytest.mark.slow
def test_unknown_method(tool, tmp_path):
    with pytest.raises(ConfigError, match=r"quant_method.type='NoSuchMethod' is invalid: allowed values are \[.*'MinMax'"):
        _run(tool, tmp_path, options=['quant_method.type=NoSuchMethod'])


@pytest.mark.parametrize('option, message', [
    ('quant_method.type=NoSuchMethod', r"quant_method.type='NoSuchMethod' is invalid: allowed values are \[.*'OMSE'"),
    ('quant_adapter.type=NoSuchAdapter',
     r"quant_adapter.type='NoSuchAdapter' is invalid: allowed values are \[.*'MMDetSwinAdapter'"),
    ('quant_method.no_such_option=1', r"quant_method \(MinMax\): .*no_such_option"),
])
def test_unknown_setting_exits_with_the_registered_names(tmp_path, option, message):
    import re
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'quant_test.py'), str(SWIN_TINY_CONFIG), '--work-dir',
                           str(tmp_path), '--cfg-options', option], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search('quant_test: error: ' + message, proc.stderr), proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr


def test_command_line_prints_the_error_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'quant_test.py'), str(tmp_path / 'nope.py')],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert 'quant_test: error: config file not found' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_out_file_must_be_a_pickle(tool, tmp_path):
    with pytest.raises(ConfigError, match=r"--out='.*preds.json' is invalid: the output file must be a .pkl"):
        tool.main([str(SWIN_TINY_CONFIG), '--work-dir', str(tmp_path), '--out', str(tmp_path / 'preds.json')])
