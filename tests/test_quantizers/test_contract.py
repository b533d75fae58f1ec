"""Properties every registered quantizer must have, parametrized over the registry (a new quantizer needs an
entry in ``qtest_utils.QUANTIZER_CASES``, and then gets all of these tests)."""
from __future__ import annotations

import io

import pytest
import torch
from qtest_utils import QUANTIZER_CASES, build_case, calibrate, make_input, target_of

from quant_hooks.quantizers import EmptyCalibrationError, NonFiniteInputError, QuantizerError, list_quantizers

NAMES = sorted(QUANTIZER_CASES)


def _mse(a, b):
    return float((a - b).double().square().mean())


def _calibrated(name, bits, seed=0, **overrides):
    q, kind = build_case(name, bits, **overrides)
    x = make_input(kind, seed)
    return calibrate(q, x), x


def test_every_registered_quantizer_has_a_case():
    assert set(list_quantizers()) == set(QUANTIZER_CASES)


def test_list_quantizers_by_pattern():
    assert list_quantizers('log*') == ['log2', 'log_int_softmax', 'log_sqrt2']
    assert list_quantizers('twin_*') == ['twin_gelu', 'twin_softmax']


def _codes_and_bounds(name, q, x):
    """(integer codes, lowest allowed, highest allowed) of ``x``."""
    b = q.bits
    if name in ('uniform', 'adaround'):
        return q.quantize(x), q.qmin, q.qmax
    if name == 'ppoq':
        codes, outliers = q.quantize(x)
        return codes[~outliers], q.qmin, q.qmax
    if name == 'twin_gelu':
        return q.quantize(x), -2**(b - 1), 2**(b - 1) - 1
    if name == 'noisy':
        return _codes_and_bounds('uniform', q.quantizer, x + q.noise)
    if name == 'qhyvit':
        codes = q.quantize(x)
        assert bool((codes >= q.qmin).all()) and bool((codes <= q.qmax).all())
        return codes, -2**(b - 1), 2**b - 1
    return q.quantize(x), 0, 2**b - 1  # log2, log_sqrt2, shift_log2, twin_softmax, ptf, log_int_softmax


@pytest.mark.parametrize('bits', range(2, 9))
@pytest.mark.parametrize('name', NAMES)
def test_codes_stay_in_range(name, bits):
    q, x = _calibrated(name, bits)
    for inp in (x, x * 3.0, make_input(QUANTIZER_CASES[name][1], seed=5)):  # also values beyond the range
        codes, lo, hi = _codes_and_bounds(name, q, inp)
        assert torch.equal(codes, codes.round()), 'codes are integers'
        assert int(codes.min()) >= lo and int(codes.max()) <= hi


@pytest.mark.parametrize('name', NAMES)
def test_error_falls_as_bits_rise(name):
    errors = []
    for bits in range(2, 9):
        q, x = _calibrated(name, bits)
        errors.append(_mse(q(x), target_of(name, x)))
    for lower, higher in zip(errors, errors[1:]):
        assert higher <= lower * 1.02 + 1e-12, errors
    # log quantizers keep their relative rounding error at any bit width: their error only falls until the range
    # covers the small values; uniform-type ones keep halving their step
    assert errors[-1] < errors[0] * (0.01 if QUANTIZER_CASES[name][2] else 0.9), errors


@pytest.mark.parametrize('name', [n for n in NAMES if QUANTIZER_CASES[n][2]])
def test_16_bits_is_near_identity(name):
    q, x = _calibrated(name, 16)
    ref = target_of(name, x)
    rel = _mse(q(x), ref) / _mse(ref, torch.zeros_like(ref))
    assert rel < 1e-7


#: quantizers for which quantizing x̂ again changes nothing (static grids that contain their own levels);
#: twin ranges are not (a value rounded up to the split moves to the other range), nor are dynamic or
#: current-tensor parameters (they are recomputed from x̂), nor log-int-softmax (logits in, probabilities out)
IDEMPOTENT = {
    'uniform': {},
    'log2': {},
    'log_sqrt2': {},
    'ppoq': dict(granularity='per_token_static'),
    'shift_log2': dict(shift=-0.17),
    'ptf': {},
    'noisy': {},
    'qhyvit': {},
    'adaround': {},
}


@pytest.mark.parametrize('name', sorted(IDEMPOTENT))
def test_idempotent(name):
    q, x = _calibrated(name, 4, **IDEMPOTENT[name])
    once = q(x)
    assert torch.equal(q(once), once)


@pytest.mark.parametrize('name', NAMES)
def test_state_dict_round_trip_is_exact(name):
    q, x = _calibrated(name, 4)
    if name == 'adaround':  # a learned rounding state must survive too
        with torch.no_grad():
            q.alpha.add_(torch.randn(q.alpha.shape, generator=torch.Generator().manual_seed(3)))
        q.set_mode('hard')
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh, _ = build_case(name, 4)
    fresh.load_state_dict(state)
    assert fresh.calibrated
    other = make_input(QUANTIZER_CASES[name][1], seed=7)
    assert torch.equal(fresh(x), q(x))
    assert torch.equal(fresh(other), q(other))
    assert fresh.bits == q.bits and fresh.granularity == q.granularity


@pytest.mark.parametrize('name', NAMES)
def test_same_config_and_data_give_identical_numbers(name):
    q1, x = _calibrated(name, 4)
    q2, _ = _calibrated(name, 4)
    assert torch.equal(q1(x), q2(x))


@pytest.mark.parametrize('bits', [1, 17, 4.5, True, '8'])
@pytest.mark.parametrize('name', NAMES)
def test_invalid_bits_raise(name, bits):
    with pytest.raises(QuantizerError, match='bits'):
        build_case(name, bits)


@pytest.mark.parametrize('name', NAMES)
def test_calibrating_on_an_empty_stream_raises(name):
    q, _ = build_case(name, 4)
    q.observing = True
    if not q.requires_calibration:  # fully dynamic: nothing to calibrate, freezing without data is fine
        q.freeze()
        return
    with pytest.raises(EmptyCalibrationError, match='observed no data'):
        q.freeze()


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('name', NAMES)
def test_non_finite_calibration_input_raises(name, bad):
    q, kind = build_case(name, 4)
    x = make_input(kind).clone()
    x.view(-1)[3] = bad
    q.observing = True
    with pytest.raises(NonFiniteInputError, match='NaN'):
        q(x)


@pytest.mark.parametrize('name', NAMES)
def test_use_before_calibration_raises(name):
    q, kind = build_case(name, 4)
    if not q.requires_calibration:
        assert torch.isfinite(q(make_input(kind))).all()
        return
    with pytest.raises(QuantizerError, match='before calibration'):
        q(make_input(kind))


@pytest.mark.parametrize('name', NAMES)
def test_disabled_quantizer_is_the_identity(name):
    q, x = _calibrated(name, 4)
    q.enabled = False
    assert torch.equal(q(x), target_of(name, x))


@pytest.mark.parametrize('name', NAMES)
def test_reports_bits_and_granularity(name):
    q, _ = _calibrated(name, 5)
    assert q.bits == 5
    assert q.granularity.name in ('per_tensor', 'per_channel', 'per_head', 'per_token')
    assert 'bits=5' in repr(q)


@pytest.mark.parametrize('name', NAMES)
def test_describes_its_calibration_and_needs_a_pass_per_planned_search_stage(name):
    q, kind = build_case(name, 5)
    x = make_input(kind)
    q.observing = True
    passes = 0
    while True:  # the protocol run_calibration_passes follows
        q(x)
        passes += 1
        if not q.end_pass():
            break
    assert passes == q.calibration_passes
    q.freeze()
    info = q.describe()
    assert info['type'] == name and info['bits'] == 5 and info['granularity'] == q.granularity.name
    search = info.get('inner') or info.get('logits') or info
    if q.requires_calibration and 'range_method' in search and search['range_method'] not in ('fixed', 'dynamic'):
        assert search['exact'] and search['passes'] == passes
