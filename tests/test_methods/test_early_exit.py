"""Calibration passes after the first end each batch's forward once the quantizers still calibrating have seen it,
and calibrate exactly as whole passes do."""
from __future__ import annotations

import timm
import torch

from quant_hooks.adapters import TimmViTAdapter, run_batches
from quant_hooks.methods import MinMaxPTQ, iter_quantizers

EARLY = 'blocks.0.attn.qkv'


class EarlyPercentile(MinMaxPTQ):
    """MinMax everywhere (one pass) but the first qkv input, whose percentile search takes a second pass."""

    def act_quantizer(self, site, slot, role, bits):
        cfg = super().act_quantizer(site, slot, role, bits)
        if site.name == EARLY and slot == 'input':
            cfg = dict(cfg, range_method='percentile')
        return cfg


def _calibrate(catching_loop: bool):
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=3, num_classes=10).eval()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    adapter = TimmViTAdapter()
    sites = adapter.prepare(model)
    last_block_runs = []
    model.blocks[2].register_forward_pre_hook(lambda m, a: last_block_runs.append(1))
    batches = [x[:2], x[2:4], x[4:]]

    def plain_loop():  # does not catch StopForward: passes must run whole
        for b in batches:
            adapter.calibration_forward(model, b)
        return len(batches)

    method = EarlyPercentile(w_bits=4, a_bits=4)
    summary = method.quantize(sites, (lambda: run_batches(adapter, model, batches)) if catching_loop else plain_loop)
    state = {f'{s.name}:{slot}': {k: v.clone() for k, v in q.state_dict().items()}
             for s, slot, q in iter_quantizers(sites)}
    return summary, state, len(last_block_runs)


def test_later_passes_stop_after_the_last_quantizer_still_calibrating():
    summary, state, last_runs = _calibrate(catching_loop=True)
    assert summary['calibration_passes'] == 2
    assert last_runs == 3  # the first pass only: the second ends inside the first block, in each batch
    whole_summary, whole_state, whole_runs = _calibrate(catching_loop=False)
    assert whole_runs == 6
    assert whole_summary['calibration_passes'] == 2
    assert state.keys() == whole_state.keys()
    for name in state:
        for key, value in state[name].items():
            assert torch.equal(value, whole_state[name][key]), (name, key)
