"""Quantized building blocks: float equivalence, quantized math, weight cache invalidation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant_hooks.nn import QuantAct, QuantConv2d, QuantLinear, QuantMatMul
from quant_hooks.quantizers import build_quantizer
from tests.test_quantizers.qtest_utils import calibrate

W4 = dict(type='uniform', bits=4, granularity=dict(type='per_channel', axis=0))
A4 = dict(type='uniform', bits=4)


def calibrated_layer(layer, x):
    if layer.input_quantizer is not None:
        calibrate(layer.input_quantizer, x)
    if layer.weight_quantizer is not None:
        calibrate(layer.weight_quantizer, layer.weight)
    return layer


@pytest.fixture
def x_img():
    return torch.randn(2, 8, 9, 9, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('groups', [1, 2, 8])
def test_conv_without_quantizers_is_bit_exact(groups, x_img):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
    qconv = QuantConv2d.from_float(conv, 'conv')
    assert torch.equal(qconv(x_img), conv(x_img))
    assert qconv.weight is conv.weight and qconv.bias is conv.bias
    assert set(qconv.state_dict()) == set(conv.state_dict())


def test_linear_without_quantizers_is_bit_exact_and_loads_float_checkpoints():
    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    x = torch.randn(3, 7, 12)
    qlin = QuantLinear.from_float(lin, 'fc')
    assert torch.equal(qlin(x), lin(x))
    other = nn.Linear(12, 5)
    qlin.load_state_dict(other.state_dict())
    assert torch.equal(qlin(x), other(x))


@pytest.mark.parametrize('groups', [1, 2, 8])
def test_quantized_conv_any_groups_equals_conv_of_fake_quantized_tensors(groups, x_img):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=groups)
    qconv = calibrated_layer(QuantConv2d.from_float(conv, 'conv', A4, W4), x_img)
    ref = F.conv2d(qconv.input_quantizer(x_img), qconv.weight_quantizer(conv.weight), conv.bias, stride=2,
                   padding=1, groups=groups)
    out = qconv(x_img)
    assert torch.equal(out, ref)
    assert not torch.equal(out, conv(x_img))
    for q in (qconv.input_quantizer, qconv.weight_quantizer):
        q.enabled = False
    assert torch.equal(qconv(x_img), conv(x_img))


def test_quantized_linear_equals_linear_of_fake_quantized_tensors():
    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    x = torch.randn(3, 7, 12)
    qlin = calibrated_layer(QuantLinear.from_float(lin, 'fc', A4, W4), x)
    ref = F.linear(qlin.input_quantizer(x), qlin.weight_quantizer(lin.weight), lin.bias)
    assert torch.equal(qlin(x), ref)
    assert qlin.input_quantizer.site == 'fc:input' and qlin.weight_quantizer.site == 'fc:weight'


def test_matmul_and_activation_blocks():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 5, 8, generator=gen), torch.randn(2, 3, 8, 5, generator=gen)
    mm = QuantMatMul('attn.qk')
    assert torch.equal(mm(q, k), q @ k)
    mm.set_quantizers(A4, dict(type='uniform', bits=4, granularity='per_head'))
    calibrate(mm.a_quantizer, q)
    calibrate(mm.b_quantizer, k)
    assert torch.equal(mm(q, k), mm.a_quantizer(q) @ mm.b_quantizer(k))
    act = QuantAct('act')
    assert act(q) is q
    act.set_quantizers(A4)
    calibrate(act.quantizer, q)
    assert torch.equal(act(q), act.quantizer(q)) and act.quantizer.site == 'act:input'


def _layer_with_cache():
    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    x = torch.randn(4, 12)
    layer = calibrated_layer(QuantLinear.from_float(lin, 'fc', None, W4), x).eval()
    return layer, x


def test_weight_cache_reuses_the_quantized_weight_while_nothing_changes():
    layer, _ = _layer_with_cache()
    with torch.no_grad():
        assert layer.quant_weight() is layer.quant_weight()


@pytest.mark.parametrize('change', ['weight_in_place', 'recalibrate', 'scale_in_place', 'disable', 'new_weight'])
def test_weight_cache_is_invalidated_by_any_change(change):
    layer, x = _layer_with_cache()
    with torch.no_grad():
        before = layer.quant_weight()
        if change == 'weight_in_place':
            layer.weight.mul_(2)
        elif change == 'recalibrate':
            layer.weight_quantizer.reset()
            calibrate(layer.weight_quantizer, layer.weight * 3)
        elif change == 'scale_in_place':
            layer.weight_quantizer.scale.mul_(2)
        elif change == 'disable':
            layer.weight_quantizer.enabled = False
        else:
            layer.weight = nn.Parameter(layer.weight.detach() * 2)
        after = layer.quant_weight()
        assert after is not before
        assert torch.equal(after, layer.weight_quantizer(layer.weight))
        assert torch.equal(layer(x), F.linear(x, layer.weight_quantizer(layer.weight), layer.bias))


def test_weight_cache_follows_learned_rounding_and_is_bypassed_while_training():
    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    layer = QuantLinear.from_float(lin, 'fc', None, dict(type='adaround', bits=3)).eval()
    calibrate(layer.weight_quantizer, lin.weight)
    ada = layer.weight_quantizer
    ada.set_mode('hard')
    with torch.no_grad():
        first = layer.quant_weight()
        ada.alpha.mul_(-1)  # what an optimiser step does: in place, no version bump by the quantizer
        flipped = layer.quant_weight()
    assert not torch.equal(first, flipped)
    assert torch.equal(flipped, ada(lin.weight).detach())
    ada.set_mode('soft')
    out = layer.quant_weight()  # gradients enabled and alpha requires grad: computed afresh, differentiable
    assert out.requires_grad
    out.sum().backward()
    assert ada.alpha.grad is not None
    layer.train()
    assert layer.quant_weight() is not layer.quant_weight()


def test_set_quantizers_replaces_and_builds_from_configs():
    layer = QuantLinear.from_float(nn.Linear(4, 4), 'fc')
    assert layer.input_quantizer is None and layer.weight_quantizer is None
    q = build_quantizer(A4)
    layer.set_quantizers(q, W4)
    assert layer.input_quantizer is q and layer.weight_quantizer.registry_name == 'uniform'
