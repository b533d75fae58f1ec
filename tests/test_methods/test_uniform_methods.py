"""Method recipes: quantizer assignment by role, overrides, calibration order and errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quant_hooks.methods import MinMaxPTQ, OMSEPTQ, PercentilePTQ, iter_quantizers, set_quant_enabled
from quant_hooks.nn import QuantLinear, QuantMatMul
from quant_hooks.quantizers import EmptyCalibrationError, QuantizerError, UniformQuantizer
from quant_hooks.sites import QuantSite, Role


def _sites():
    torch.manual_seed(0)
    first = QuantLinear.from_float(nn.Linear(8, 8), 'embed')
    fc = QuantLinear.from_float(nn.Linear(8, 4), 'blocks.0.fc2')
    mm = QuantMatMul('blocks.0.qk')
    return [QuantSite('embed', 'linear', first, {'input': Role.EMBED, 'weight': Role.WEIGHT}, tags={'first'}),
            QuantSite('blocks.0.fc2', 'linear', fc, {'input': Role.POST_GELU, 'weight': Role.WEIGHT}),
            QuantSite('blocks.0.qk', 'matmul', mm, {'a': Role.Q, 'b': Role.K})]


def _run(sites, x):
    h = sites[0].module(x)
    h = sites[1].module(torch.nn.functional.gelu(h))
    return sites[2].module(h, h.transpose(-1, -2))


def test_assignment_bits_and_overrides():
    sites = _sites()
    method = MinMaxPTQ(w_bits=4, a_bits=6, overrides=[dict(tags=['first'], w_bits=8, a_bits=8),
                                                      dict(names=['*.qk'], a_bits=5)])
    method.assign(sites)
    bits = {(s.name, slot): q.bits for s, slot, q in iter_quantizers(sites)}
    assert bits == {('embed', 'input'): 8, ('embed', 'weight'): 8, ('blocks.0.fc2', 'input'): 6,
                    ('blocks.0.fc2', 'weight'): 4, ('blocks.0.qk', 'a'): 5, ('blocks.0.qk', 'b'): 5}
    w = sites[1].module.weight_quantizer
    assert isinstance(w, UniformQuantizer) and w.granularity.name == 'per_channel' and w.granularity.axis == 0
    assert sites[1].module.input_quantizer.site == 'blocks.0.fc2:input'


def test_float_roles_stay_unquantized():
    sites = _sites()
    MinMaxPTQ(float_roles=['q', 'k']).assign(sites)
    assert sites[2].module.a_quantizer is None and sites[2].module.b_quantizer is None


def test_calibration_uses_float_weights_then_quantizes_everything():
    sites = _sites()
    x = torch.randn(2, 5, 8)
    ref = _run(sites, x)
    seen = []

    def run():
        seen.append(sites[1].module.weight_quantizer.enabled)
        _run(sites, x)
        return 1

    MinMaxPTQ(w_bits=8, a_bits=8).quantize(sites, run)
    assert seen == [False], 'activations are observed on the float model'
    assert all(q.calibrated and q.enabled for _, _, q in iter_quantizers(sites))
    out = _run(sites, x)
    assert not torch.equal(out, ref)
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.999
    set_quant_enabled(sites, False)
    assert torch.equal(_run(sites, x), ref)


@pytest.mark.parametrize('cls, range_method', [(MinMaxPTQ, 'minmax'), (PercentilePTQ, 'percentile'),
                                               (OMSEPTQ, 'mse')])
def test_range_method_reaches_the_activation_quantizers(cls, range_method):
    sites = _sites()
    cls(w_bits=8, a_bits=8).assign(sites)
    assert sites[1].module.input_quantizer.range_method == range_method
    assert cls().describe()['range_method'] == range_method


def test_empty_calibration_is_an_error():
    sites = _sites()
    with pytest.raises(EmptyCalibrationError, match='produced no batch'):
        MinMaxPTQ().quantize(sites, lambda: 0)


def test_a_site_never_reached_is_named():
    sites = _sites()
    with pytest.raises(EmptyCalibrationError, match=r'blocks\.0\.qk:a.*observed no data'):
        MinMaxPTQ().quantize(sites, lambda: (sites[0].module(torch.randn(2, 8)), sites[1].module(torch.randn(2, 8)),
                                             1)[-1])


@pytest.mark.parametrize('kwargs, message', [
    (dict(w_bits=1), r'w_bits=1 is invalid: allowed values are integers 2\.\.16'),
    (dict(a_bits=17), r'a_bits=17 is invalid'),
    (dict(a_bits=4.0), r'a_bits=4\.0 is invalid'),
    (dict(overrides=[dict(names=['x'], w_bits=32)]), r'overrides\.w_bits=32 is invalid'),
    (dict(overrides=[dict(layer='x')]), r"override keys \['layer'\] are invalid"),
    (dict(float_roles=['softmax']), r"float_roles \['softmax'\] are invalid: allowed values are"),
])
def test_invalid_settings(kwargs, message):
    with pytest.raises((QuantizerError, ValueError), match=message):
        MinMaxPTQ(**kwargs)


def test_unknown_granularity_fails_at_assignment():
    with pytest.raises(QuantizerError, match="granularity='per_pixel' is invalid: allowed values are"):
        MinMaxPTQ(a_granularity='per_pixel').assign(_sites())


def test_exact_searches_run_the_calibration_set_once_more_and_score_every_value():
    sites = _sites()
    xs = [torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    passes = []

    def run():
        passes.append(sites[1].module.weight_quantizer.enabled)
        for x in xs:
            _run(sites, x)
        return len(xs)

    method = PercentilePTQ(w_bits=4, a_bits=4, w_range_method='mse')
    summary = method.quantize(sites, run)
    assert passes == [False, False]  # the float model, twice: statistics, then the candidates' errors
    assert summary['calibration_batches'] == 3 and summary['calibration_passes'] == 2
    assert summary['quantizer_searches'] == {'uniform/mse': dict(exact=2, sampled=0),
                                             'uniform/percentile': dict(exact=4, sampled=0)}
    q = sites[1].module.input_quantizer
    info = q.describe()
    assert info['exact'] and info['passes'] == 2 and info['scored_values'] == info['values'] == 3 * 2 * 5 * 8
    w = sites[1].module.weight_quantizer.describe()
    assert w['passes'] == 2 and w['scored_values'] == sites[1].module.weight.numel()
    # the same calibration on one concatenated batch gives the same parameters
    one = _sites()
    PercentilePTQ(w_bits=4, a_bits=4, w_range_method='mse').quantize(one, lambda: (_run(one, torch.cat(xs)), 1)[1])
    torch.testing.assert_close(one[1].module.input_quantizer.scale, q.scale, rtol=1e-6, atol=0)


def test_passes_must_run_the_same_batches():
    sites = _sites()
    counts = iter([2, 1])

    def run():
        n = next(counts)
        for _ in range(n):
            _run(sites, torch.randn(2, 5, 8))
        return n

    with pytest.raises(QuantizerError, match='pass 2 ran 1 batches and the first one 2'):
        PercentilePTQ().quantize(sites, run)
