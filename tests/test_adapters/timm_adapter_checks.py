"""Checks shared by the timm adapter tests (not a test module itself)."""
from __future__ import annotations

import torch
from mmengine.registry import DefaultScope

from quant_hooks.adapters import run_batches
from quant_hooks.methods import set_quant_enabled
from quant_hooks.registry import QUANT_METHODS


def call_order(model, sites, x) -> list[str]:
    """Site names in the order their modules run on ``x`` (first call of each)."""
    order, handles = [], []
    for s in sites:
        handles.append(s.module.register_forward_pre_hook(lambda m, a, name=s.name: order.append(name)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return list(dict.fromkeys(order))


def check_exact_and_quantizable(model, adapter, x) -> list:
    """Prepare ``model``: float outputs are bit-exact with no quantizer and with quantization switched off; MinMax
    W8A8 changes the output a little, and with it active the sites run in the order listed. Returns the sites."""
    model.eval()
    with torch.no_grad():
        ref = model(x)
    sites = adapter.prepare(model)
    assert len(adapter.prepare(model)) == len(sites), 'prepare must be idempotent'
    with torch.no_grad():
        assert torch.equal(model(x), ref), 'wrapped model without quantizers must equal float bit for bit'
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        method = QUANT_METHODS.build(dict(type='MinMax', w_bits=8, a_bits=8))
    method.quantize(sites, lambda: run_batches(adapter, model, [x]))
    # with quantizers active every site runs (attention takes its explicit path)
    assert call_order(model, sites, x) == [s.name for s in sites], 'sites must be listed in network order'
    with torch.no_grad():
        quant = model(x)
    assert not torch.equal(quant, ref)
    cos = torch.nn.functional.cosine_similarity(quant.flatten(), ref.flatten(), dim=0)
    assert cos > 0.9, f'W8A8 output drifted: cosine {float(cos)}'
    set_quant_enabled(sites, False)
    with torch.no_grad():
        assert torch.equal(model(x), ref), 'quantization switched off must equal float bit for bit'
    set_quant_enabled(sites, True)
    return sites
