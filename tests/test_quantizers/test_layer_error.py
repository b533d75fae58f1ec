"""Layer-output errors of candidate quantized inputs: the linear form (with and without the Gram matrix) against
a float64 reference written here, and the noise search choosing the same with either form."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quant_hooks.quantizers import LayerFnError, LinearOutputError, NoisyQuantizer, QuantizerError, calibrate, \
    search_noise


def _layer(in_f, out_f, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=gen) / in_f**0.5
    w_q = (w * 16).round() / 16  # a coarse weight quantization: the weight error term is not small
    xs = [torch.randn(3, 40, in_f, generator=gen) * (1 + 4 * (torch.rand(in_f, generator=gen) > 0.95)),
          torch.randn(2, 7, in_f, generator=gen)]
    return w, w_q, xs


def _reference(xs, quantized, w, w_q):
    """Σ‖a·Ŵᵀ − x·Wᵀ‖² in float64, value by value."""
    total = 0.0
    for x, a in zip(xs, quantized):
        total += float(((a.double() @ w_q.double().t()) - (x.double() @ w.double().t())).square().sum())
    return total


@pytest.mark.parametrize('in_f,out_f', [(16, 48), (32, 32), (48, 16)])  # widening (Gram), square, narrowing
def test_linear_error_equals_a_float64_reference(in_f, out_f):
    w, w_q, xs = _layer(in_f, out_f)
    error = LinearOutputError(xs, w, w_q)
    assert error.gram == (in_f <= out_f)
    gen = torch.Generator().manual_seed(3)
    for spread in (0.0, 0.01, 0.3):  # the plain candidate (a = x), a small and a large input error
        quantized = [x + spread * torch.randn(x.shape, generator=gen) for x in xs]
        got = sum(error.batch(i, a) for i, a in enumerate(quantized))
        want = _reference(xs, quantized, w, w_q)
        assert got == pytest.approx(want, rel=1e-6)
        from_errors = sum(error.batch_error(i, a - x) for i, (a, x) in enumerate(zip(quantized, xs)))
        assert from_errors == pytest.approx(want, rel=1e-6)
    assert error.count == sum(x[..., 0].numel() for x in xs) * out_f


def test_linear_error_refuses_mismatched_weights():
    w, w_q, xs = _layer(8, 8)
    with pytest.raises(QuantizerError, match='weight_q'):
        LinearOutputError(xs, w, w_q[:4])


@pytest.mark.parametrize('in_f,out_f', [(24, 96), (96, 24)])
def test_noise_search_picks_the_same_with_the_linear_form(in_f, out_f):
    w, w_q, xs = _layer(in_f, out_f, seed=5)
    b = torch.randn(out_f)
    results = []
    for build in (lambda: LinearOutputError(xs, w, w_q),
                  lambda: LayerFnError(xs, lambda x: F.linear(x, w_q, b), [F.linear(x, w, b) for x in xs])):
        q = calibrate(NoisyQuantizer(dict(type='uniform', bits=4), seed=1), *xs)
        results.append(search_noise(q, None, build()))
    assert (results[0]['noise_range'], results[0]['noise_mean']) == (results[1]['noise_range'],
                                                                     results[1]['noise_mean'])
    assert results[0]['mse'] == pytest.approx(results[1]['mse'], rel=1e-5)
    assert results[0]['evaluated'] == results[1]['evaluated']


def test_the_noisy_input_error_is_the_quantization_error_of_the_shifted_input():
    gen = torch.Generator().manual_seed(8)
    xs = [torch.randn(4, 30, 12, generator=gen) * 3]
    q = calibrate(NoisyQuantizer(dict(type='uniform', bits=4), seed=2), *xs)
    q.set_noise(0.75, 0.25)
    x = xs[0]
    y = x + q.noise.reshape(1, 1, -1)
    assert torch.equal(q.input_error_unfolded(x), q.quantizer(y) - y)
    torch.testing.assert_close(q.input_error_unfolded(x), q.fake_quant_unfolded(x) - x, rtol=0, atol=1e-5)
    w, w_q, _ = _layer(12, 20)
    error = LinearOutputError(xs, w, w_q)
    assert error.of_input_error(q.input_error_unfolded) == pytest.approx(error(q.fake_quant_unfolded), rel=1e-5)
