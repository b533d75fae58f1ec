"""The quantizer interface: life cycle, granularity values, registry, argument checks."""
from __future__ import annotations

import pytest
import torch
from qtest_utils import calibrate, make_input

from quant_hooks.quantizers import (EmptyCalibrationError, NonFiniteInputError, PerChannel, PerHead, PerTensor,
                                    PerToken, Quantizer, QuantizerError, UniformQuantizer, build_quantizer,
                                    check_bits, get_quantizer_class, parse_granularity, register_quantizer)
from quant_hooks.quantizers.granularity import require_granularity


@pytest.mark.parametrize('spec, expected', [
    ('per_tensor', PerTensor()),
    ('per_channel', PerChannel(-1)),
    (dict(type='per_channel', axis=0), PerChannel(0)),
    ('per_head', PerHead(1)),
    ('per_token', PerToken(dynamic_=True)),
    ('per_token_static', PerToken(dynamic_=False)),
    (dict(type='per_token', dynamic=False, token_axis=1), PerToken(dynamic_=False, token_axis=1)),
    (PerChannel(2), PerChannel(2)),
])
def test_parse_granularity(spec, expected):
    assert parse_granularity(spec) == expected


@pytest.mark.parametrize('spec', ['per_pixel', None, dict(type='per_channel', axes=3), 7])
def test_unknown_granularity_raises_with_allowed_values(spec):
    with pytest.raises(QuantizerError, match='granularity'):
        parse_granularity(spec)


def test_granularity_groups_and_parameter_shapes():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert PerTensor().grouped(x).shape == (1, 120) and PerTensor().param_shape(x) == ()
    g = PerChannel(1)
    assert g.grouped(x).shape == (3, 40) and g.param_shape(x) == (3, 1, 1)
    assert torch.equal(g.grouped(x)[1], x[:, 1].flatten())
    assert PerChannel(-1).param_shape(x) == (5, )
    assert PerToken(dynamic_=False).param_shape(x) == (4, 1)
    with pytest.raises(QuantizerError, match='axis=4'):
        PerChannel(4).grouped(x)


def test_require_granularity_names_the_allowed_values():
    with pytest.raises(QuantizerError, match=r"allowed values are \['per_tensor'\]"):
        require_granularity(PerChannel(0), dict(per_tensor=PerTensor), 'q')
    with pytest.raises(QuantizerError, match='dynamic'):
        require_granularity(PerToken(), dict(per_token=PerToken), 'q', dynamic=False)


@pytest.mark.parametrize('bits', [2, 8, 16])
def test_check_bits_accepts_the_allowed_range(bits):
    assert check_bits(bits) == bits


@pytest.mark.parametrize('bits', [0, 1, 17, 8.0, True, None, '4'])
def test_check_bits_rejects_the_rest(bits):
    with pytest.raises(QuantizerError, match=r'allowed values are integers 2\.\.16'):
        check_bits(bits)


def test_life_cycle_observe_freeze_quantize():
    x = make_input('ln')
    q = UniformQuantizer(4)
    assert not q.calibrated
    with pytest.raises(QuantizerError, match='before calibration'):
        q(x)
    q.observing = True
    assert q(x) is x  # observing returns the input unchanged
    v = q.version
    q.freeze()
    assert q.calibrated and not q.observing and q.version > v
    assert not torch.equal(q(x), x)
    q.enabled = False
    assert q(x) is x
    q.enabled = True
    q.reset()
    assert not q.calibrated


def test_freeze_without_data_and_nonfinite_inputs_raise():
    q = UniformQuantizer(4)
    q.site = 'blocks.0.mlp.fc1:input'
    with pytest.raises(EmptyCalibrationError, match='blocks.0.mlp.fc1'):
        q.freeze()
    q.observing = True
    x = make_input('ln')
    x[0, 0, 0] = float('nan')
    with pytest.raises(NonFiniteInputError, match='1 NaN and 0 inf'):
        q(x)


def test_state_dict_resizes_parameters_sized_at_calibration():
    q = calibrate(UniformQuantizer(4, 'per_channel'), make_input('ln'))
    fresh = UniformQuantizer(4, 'per_channel')
    assert fresh.scale.shape == (0, )
    fresh.load_state_dict(q.state_dict())
    assert fresh.scale.shape == (24, ) and fresh.calibrated
    x = make_input('ln', seed=3)
    assert torch.equal(fresh(x), q(x))


def test_registry_builds_by_name_and_reports_bad_configs():
    assert build_quantizer(None) is None
    q = UniformQuantizer(4)
    assert build_quantizer(q) is q
    assert isinstance(build_quantizer(dict(type='log2', bits=4)), get_quantizer_class('log2'))
    with pytest.raises(QuantizerError, match="unknown quantizer type='nope'"):
        build_quantizer(dict(type='nope'))
    with pytest.raises(QuantizerError, match='"type" key'):
        build_quantizer(dict(bits=4))
    with pytest.raises(QuantizerError, match='bad arguments'):
        build_quantizer(dict(type='uniform', colour='red'))


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(QuantizerError, match='already registered'):

        @register_quantizer('uniform')
        class Other(Quantizer):
            pass
