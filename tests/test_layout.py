"""Granularity by meaning, resolved against each slot's declared layout; the attention-logits site."""
from __future__ import annotations

import pytest
import timm
import torch
from mmengine.registry import DefaultScope

from quant_hooks.adapters import TimmViTAdapter, run_batches
from quant_hooks.layout import HEADS, HEADS_T, NCHW, TOKENS, WEIGHT, resolve_granularity
from quant_hooks.methods import set_quant_enabled
from quant_hooks.methods.base import PTQMethod
from quant_hooks.nn import QuantSoftmax
from quant_hooks.quantizers import LogIntSoftmax, PerChannel, PerHead, PerTensor, PerToken, QuantizerError
from quant_hooks.registry import QUANT_METHODS
from quant_hooks.sites import Role


@pytest.mark.parametrize('layout, meaning, expected', [
    (TOKENS, 'per_channel', PerChannel(axis=-1)),
    (NCHW, 'per_channel', PerChannel(axis=-3)),
    (WEIGHT, 'per_channel', PerChannel(axis=0)),
    (HEADS_T, 'per_channel', PerChannel(axis=-2)),
    (HEADS, 'per_head', PerHead(axis=-3)),
    (HEADS_T, 'per_head', PerHead(axis=-3)),
    (TOKENS, 'per_token', PerToken(dynamic_=True, token_axis=-2, channel_axis=-1)),
    (NCHW, 'per_token', PerToken(dynamic_=True, token_axis=-2, channel_axis=-3)),
    (HEADS_T, 'per_token', PerToken(dynamic_=True, token_axis=-1, channel_axis=-2)),
    (TOKENS, 'per_token_static', PerToken(dynamic_=False, token_axis=-2, channel_axis=-1)),
    (HEADS_T, dict(type='per_token', dynamic=False), PerToken(dynamic_=False, token_axis=-1, channel_axis=-2)),
    (None, 'per_tensor', PerTensor()),
])
def test_meanings_resolve_to_the_slot_axes(layout, meaning, expected):
    assert resolve_granularity(meaning, layout, 'site:slot') == expected


@pytest.mark.parametrize('layout, meaning, missing', [
    (TOKENS, 'per_head', 'head'), (NCHW, 'per_token_static', 'token'), (WEIGHT, 'per_token', 'token'),
    (None, 'per_channel', 'channel'),
])
def test_a_meaning_that_does_not_fit_names_the_site(layout, meaning, missing):
    with pytest.raises(QuantizerError, match=rf'blocks.0.x:input: granularity {meaning!r} does not fit this slot.*'
                                             rf'has no {missing} axis'):
        resolve_granularity(meaning, layout, 'blocks.0.x:input')


def test_explicit_axes_pass_through_and_unknown_meanings_fail():
    spec = dict(type='per_channel', axis=2)
    assert resolve_granularity(spec, TOKENS, 's') is spec
    with pytest.raises(QuantizerError, match=r"granularity='per_pixel' is invalid: allowed values are"):
        resolve_granularity('per_pixel', TOKENS, 's')


def _vit():
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=2, num_classes=10).eval()
    return model, torch.randn(2, 3, 32, 32)


def _method(**kw):
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        return QUANT_METHODS.build(dict(type='MinMax', w_bits=8, a_bits=8, **kw))


def test_per_channel_follows_each_slot_layout():
    """One `a_granularity='per_channel'` gives the channel axis of each slot: the last axis of token inputs, axis -3
    of the NCHW patch-embedding input, axis -2 of kᵀ; the observed parameter count is the channel count."""
    model, x = _vit()
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    _method(a_granularity='per_channel').quantize(sites, lambda: run_batches(adapter, model, [x]))
    by_name = {s.name: s for s in sites}
    embed = by_name['patch_embed.proj'].module.input_quantizer
    assert embed.granularity == PerChannel(axis=-3) and embed.scale.numel() == 3
    qk = by_name['blocks.0.attn.qk_matmul'].module
    assert qk.a_quantizer.granularity == PerChannel(axis=-1)
    assert qk.b_quantizer.granularity == PerChannel(axis=-2) and qk.b_quantizer.scale.shape == (64, 1)
    assert by_name['blocks.0.attn.qkv'].module.input_quantizer.scale.numel() == 192
    assert by_name['blocks.0.attn.qkv'].module.weight_quantizer.granularity == PerChannel(axis=0)


def test_per_head_fails_on_a_linear_input_naming_the_site():
    model, x = _vit()
    sites = TimmViTAdapter().prepare(model)
    with pytest.raises(QuantizerError, match=r"patch_embed.proj:input: granularity 'per_head' does not fit"):
        _method(a_granularity='per_head').assign(sites)


class LogitsOnly(PTQMethod):
    """Quantizes the attention logits only (FQ-ViT's log-int-softmax), for the test."""

    def weight_quantizer(self, site, bits):
        return None

    def act_quantizer(self, site, slot, role, bits):
        if role != Role.ATTN_LOGITS:
            return None
        return dict(type='log_int_softmax', bits=4, logit_quantizer=dict(type='uniform', bits=8))


def test_attention_logits_site_installs_log_int_softmax():
    model, x = _vit()
    with torch.no_grad():
        ref = model(x)
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    logit_sites = [s for s in sites if s.roles == {'input': Role.ATTN_LOGITS}]
    assert [s.name for s in logit_sites] == ['blocks.0.attn.attn_softmax', 'blocks.1.attn.attn_softmax']
    assert all(isinstance(s.module, QuantSoftmax) and s.layout('input') == HEADS for s in logit_sites)
    with torch.no_grad():
        assert torch.equal(model(x), ref), 'no quantizer on the softmax site: float path unchanged'
    LogitsOnly(w_bits=8, a_bits=8).quantize(sites, lambda: run_batches(adapter, model, [x]))
    q = logit_sites[0].module.quantizer
    assert isinstance(q, LogIntSoftmax) and q.calibrated
    # the probabilities the site returns are log-int-softmax's on the same logits
    captured = {}
    h = logit_sites[0].module.register_forward_hook(lambda m, a, out: captured.update(x=a[0], out=out))
    with torch.no_grad():
        out = model(x)
    h.remove()
    assert torch.equal(captured['out'], q.fake_quant(captured['x']))
    assert torch.log2(captured['out'][captured['out'] > 0]).round().eq(torch.log2(
        captured['out'][captured['out'] > 0])).all(), 'probabilities are powers of two'
    assert not torch.equal(out, ref)
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.9
    set_quant_enabled(sites, False)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_quant_softmax_with_a_logit_quantizer_applies_softmax_after_it():
    from quant_hooks.quantizers import UniformQuantizer
    q = UniformQuantizer(bits=4)
    x = torch.randn(2, 3, 5, 5)
    q.observing = True
    q(x)
    q.freeze()
    site = QuantSoftmax('s', quantizer=q)
    assert torch.equal(site(x), q.fake_quant(x).softmax(-1))
    assert torch.equal(QuantSoftmax('s')(x), x.softmax(-1))
