"""The quantized timm attention shared by the ViT, DeiT and ViTDet adapters: timm's own float computation when
quantization is off, timm's explicit path with the matmuls as sites when it is on."""
from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import Attention

from quant_hooks.adapters.timm_common import QuantTimmAttention
from quant_hooks.quantizers import build_quantizer


@pytest.fixture
def attention():
    torch.manual_seed(0)
    return Attention(32, num_heads=4, qkv_bias=True).eval()


def _install(attn, bits=4):
    attn.qk_matmul.set_quantizers(*(build_quantizer(dict(type='uniform', bits=bits)) for _ in range(2)))
    attn.av_matmul.set_quantizers(*(build_quantizer(dict(type='uniform', bits=bits)) for _ in range(2)))
    return [attn.qk_matmul.a_quantizer, attn.qk_matmul.b_quantizer, attn.av_matmul.a_quantizer,
            attn.av_matmul.b_quantizer]


def test_without_quantizers_the_forward_is_timms(attention):
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        want = attention(x)
        quant = QuantTimmAttention.convert(copy.deepcopy(attention), 'attn')
        assert torch.equal(quant(x), want)


def test_explicit_path_equals_timms_unfused_computation(attention):
    """Observing quantizers pass tensors through, so the explicit path must reproduce timm's own unfused path."""
    x = torch.randn(3, 10, 32)
    reference = copy.deepcopy(attention)
    reference.fused_attn = False
    quant = QuantTimmAttention.convert(copy.deepcopy(attention), 'attn')
    qs = _install(quant)
    for q in qs:
        q.observing = True
    with torch.no_grad():
        assert torch.equal(quant(x), reference(x))
    assert all(q.num_observed == 1 for q in qs)


def test_enabled_quantizers_change_the_output_and_disabled_ones_do_not(attention):
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        want = attention(x)
        quant = QuantTimmAttention.convert(copy.deepcopy(attention), 'attn')
        qs = _install(quant, bits=3)
        for q in qs:
            q.observing = True
        quant(x)
        for q in qs:
            q.freeze()
        assert not torch.equal(quant(x), want)
        for q in qs:
            q.enabled = False
        assert torch.equal(quant(x), want)


def test_convert_refuses_other_attention_types():
    from timm.layers import AttentionRope
    with pytest.raises(TypeError, match=r'expected timm\.layers\.attention\.Attention, got '
                                        r'timm\.layers\.attention\.AttentionRope'):
        QuantTimmAttention.convert(AttentionRope(32, num_heads=4), 'blocks.0.attn')
