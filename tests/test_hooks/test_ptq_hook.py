"""PTQHook driven by a real mmengine Runner on toy components."""
from __future__ import annotations

import json

import pytest
import torch
from mmengine.runner import Runner

from quant_hooks.apis import find_ptq_hook, run_quant_test
from quant_hooks.nn import QuantLinear
from quant_hooks.quantizers import QuantizerError
from quant_hooks.utils.checkpoint import CheckpointError
from toy_components import toy_config


def _checkpoint(tmp_path, seed=0):
    from toy_components import ToyRegressor
    torch.manual_seed(seed)
    path = tmp_path / 'toy.pth'
    torch.save(dict(state_dict=ToyRegressor().state_dict()), path)
    return path


def test_float_and_quantized_passes_are_recorded(tmp_path):
    record = run_quant_test(toy_config(tmp_path), str(_checkpoint(tmp_path)))
    saved = json.loads((tmp_path / 'quant_results.json').read_text())
    assert set(saved['metrics']) == {'float', 'quant'}
    assert saved['metrics'] == record['metrics']
    assert saved['metrics']['float']['mse'] != saved['metrics']['quant']['mse']
    assert saved['num_sites'] == 2 and saved['tensors_by_role'] == {'post_gelu': 1, 'post_ln': 1, 'weight': 2}
    assert saved['calibration']['num_images'] == 4 and len(saved['calibration']['indices']) == 4
    assert saved['calibration']['images'][0].startswith('toy_1_'), 'calibration comes from its own split'
    assert (tmp_path / 'quant_state.pth').is_file()


def test_hook_runs_after_the_checkpoint_is_loaded(tmp_path):
    """Quantizers see the checkpoint's weights: the weight quantizer's range is the loaded weight's range."""
    ckpt = _checkpoint(tmp_path, seed=7)
    cfg = toy_config(tmp_path, quant_method=dict(type='MinMax', w_bits=8, a_bits=8, w_granularity='per_tensor'))
    run_quant_test(cfg, str(ckpt), eval_float=False)
    state = torch.load(ckpt)['state_dict']
    w = state['fc1.weight']
    scale = torch.load(tmp_path / 'quant_state.pth')['quantizers']['fc1.weight_quantizer.scale']
    assert scale.item() == pytest.approx(((w.max() - w.min()) / 255).item())


def test_same_seed_gives_identical_numbers_and_saved_state_reproduces_them(tmp_path):
    ckpt = _checkpoint(tmp_path)
    a = run_quant_test(toy_config(tmp_path / 'a'), str(ckpt))
    b = run_quant_test(toy_config(tmp_path / 'b'), str(ckpt))
    assert a['metrics'] == b['metrics'] and a['calibration']['indices'] == b['calibration']['indices']
    cfg = toy_config(tmp_path / 'c', custom_hooks=[dict(type='PTQHook', load_state=str(tmp_path / 'a' /
                                                                                       'quant_state.pth'))])
    c = run_quant_test(cfg, str(ckpt), eval_float=False)
    assert c['metrics']['quant'] == a['metrics']['quant']
    other_seed = run_quant_test(toy_config(tmp_path / 'd', quant_calibration=dict(
        dataset=dict(type='ToyDataset', length=16, offset=1, pipeline=[]), num_images=4, seed=5)), str(ckpt))
    assert other_seed['calibration']['indices'] != a['calibration']['indices']


def test_quantization_is_applied_once_and_bypass_leaves_float(tmp_path):
    runner = Runner.from_cfg(toy_config(tmp_path))
    hook = find_ptq_hook(runner)
    hook.bypass = True
    runner.test()
    assert not isinstance(runner.model.fc1, QuantLinear)
    hook.bypass = False
    runner.test()
    first = runner.model.fc1
    assert isinstance(first, QuantLinear) and first.input_quantizer.calibrated
    runner.test()
    assert runner.model.fc1 is first and first.input_quantizer is hook.sites[0].module.input_quantizer


def test_hook_arguments_override_config_keys(tmp_path):
    cfg = toy_config(tmp_path, custom_hooks=[dict(type='PTQHook', method=dict(type='MinMax', w_bits=4, a_bits=6))])
    record = run_quant_test(cfg, None, eval_float=False)
    assert (record['method']['w_bits'], record['method']['a_bits']) == (4, 6)
    assert 'RANDOM weights' in record['note']


def test_loading_a_state_from_another_method_fails(tmp_path):
    ckpt = _checkpoint(tmp_path)
    run_quant_test(toy_config(tmp_path / 'a'), str(ckpt), eval_float=False)
    cfg = toy_config(tmp_path / 'b', quant_method=dict(type='MinMax', float_roles=['post_gelu']),
                     custom_hooks=[dict(type='PTQHook', load_state=str(tmp_path / 'a' / 'quant_state.pth'))])
    with pytest.raises(CheckpointError, match='does not match the model.*unexpected'):
        run_quant_test(cfg, str(ckpt), eval_float=False)


@pytest.mark.parametrize('missing', ['quant_method', 'quant_adapter'])
def test_missing_settings_are_named(tmp_path, missing):
    cfg = toy_config(tmp_path)
    cfg.pop(missing)
    with pytest.raises(ValueError, match=f'PTQHook needs `{missing.split("_")[1]}`.*{missing}'):
        run_quant_test(cfg, None)


def test_bad_method_settings_fail_before_the_float_pass(tmp_path):
    cfg = toy_config(tmp_path, quant_method=dict(type='MinMax', w_bits=8, a_bits=20))
    with pytest.raises(QuantizerError, match='a_bits=20 is invalid'):
        run_quant_test(cfg, None)
    assert not (tmp_path / 'quant_results.json').exists()


def test_runners_started_in_the_same_second_share_no_instances(tmp_path, monkeypatch):
    """mmengine names a runner's logger, message hub and default scope by config name and start second; two runs
    in one process (a suite, a regression check) must not get each other's (a detector run's ``mmdet`` scope
    building the next classifier's pipeline)."""
    import mmengine.runner.runner as runner_module
    from mmengine.registry import DefaultScope

    from quant_hooks.apis import build_runner
    monkeypatch.setattr(runner_module.time, 'strftime', lambda fmt, t=None: '20260101_000000')
    first = build_runner(toy_config(tmp_path / 'a', default_scope='mmengine',
                                   model=dict(type='quant_hooks.ToyRegressor'), custom_hooks=[]))
    second = build_runner(toy_config(tmp_path / 'b'))
    assert first.experiment_name != second.experiment_name
    assert first.message_hub is not second.message_hub
    assert DefaultScope.get_current_instance().scope_name == 'quant_hooks'
    named = build_runner(toy_config(tmp_path / 'c', experiment_name='mine'))
    assert named.experiment_name == 'mine_20260101_000000'


@pytest.mark.parametrize('progress', [True, False])
def test_calibration_passes_show_a_progress_bar(tmp_path, capsys, progress):
    cfg = toy_config(tmp_path, quant_method=dict(type='OMSE', w_bits=4, a_bits=4),  # two passes
                     custom_hooks=[dict(type='PTQHook', progress=progress)])
    record = run_quant_test(cfg, None, eval_float=False)
    assert record['calibration_passes'] == 2
    err = capsys.readouterr().err
    for k in (1, 2):
        assert (f'PTQHook: calibration pass {k}' in err) == progress
    if progress:
        assert '0/4' in err  # the 4 calibration images, one per batch


def test_a_type_error_inside_the_hook_keeps_its_traceback(tmp_path, monkeypatch):
    """mmengine re-raises a hook's TypeError as ``TypeError('... in PTQHook') from None``; run_quant_test shows the
    original error's traceback again (the frame that raised it)."""
    import traceback

    from quant_hooks.hooks import PTQHook

    def broken_calibration_step(self, runner):
        raise TypeError("'Dataset' object is not callable")

    monkeypatch.setattr(PTQHook, 'quantize', broken_calibration_step)
    with pytest.raises(TypeError, match='not callable in') as info:
        run_quant_test(toy_config(tmp_path), str(_checkpoint(tmp_path)), eval_float=False)
    assert info.value.__suppress_context__ is False
    text = ''.join(traceback.format_exception(info.value))
    assert 'broken_calibration_step' in text
