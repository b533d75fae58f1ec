"""The reconstruction engine on a tiny ViT: determinism, the cache budget, QDrop mixing, the loss terms, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from recon_helpers import quantizer_state, tiny_vit

from quant_hooks.methods import MinMaxPTQ, QDrop, iter_quantizers
from quant_hooks.quantizers import AdaRoundQuantizer
from quant_hooks.reconstruction import (AttentionKL, RecordCache, ReconstructionConfig, StopForward, build_loss_term,
                                        output_mse)
from quant_hooks.reconstruction.engine import _mix

FAST = dict(iters=8, progress=False, units=['blocks.0.attn', 'blocks.0.mlp'], keep_better=False)


def _run(seed=3, **recon):
    net, sites, run = tiny_vit()
    method = MinMaxPTQ(w_bits=4, a_bits=4, reconstruction={**FAST, 'seed': seed, **recon})
    summary = method.run(net, sites, run)
    return net, sites, summary


def test_same_seed_same_state_other_seed_differs():
    net_a, _, sum_a = _run(seed=3)
    net_b, _, _ = _run(seed=3)
    net_c, _, _ = _run(seed=4)
    a, b, c = quantizer_state(net_a), quantizer_state(net_b), quantizer_state(net_c)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    learned = [k for k in a if k.endswith('.alpha') or k.endswith('.scale')]
    assert any(not torch.equal(a[k], c[k]) for k in learned)
    units = sum_a['reconstruction']['units']
    assert [u['name'] for u in units] == ['blocks.0.attn', 'blocks.0.mlp']
    assert all(u['iters'] == 8 and u['records'] == 3 and u['rounding_quantizers'] == 2 for u in units)
    assert sum_a['reconstruction']['schedule']['seed'] == 3


def test_spilled_run_equals_in_memory_run_within_budget():
    budget_mb = 0.01  # 10 KiB: a record of the attention unit is 4*2*32 floats (1 KiB) per tensor
    net_mem, _, s_mem = _run(cache_mb=64)
    net_disk, _, s_disk = _run(cache_mb=budget_mb)
    mem, disk = quantizer_state(net_mem), quantizer_state(net_disk)
    assert all(torch.equal(mem[k], disk[k]) for k in mem)
    for u in s_disk['reconstruction']['units']:
        assert u['spilled_records'] > 0 and u['cache_peak_bytes'] <= budget_mb * 2**20
    assert all(u['spilled_records'] == 0 for u in s_mem['reconstruction']['units'])
    assert s_disk['reconstruction']['peak_rss_mb'] > 0


def test_cache_budget_and_roundtrip(tmp_path):
    cache = RecordCache(budget_bytes=1000, spill_dir=str(tmp_path))
    recs = [dict(args=(torch.randn(10, 10), (3, 4)), kwargs={}, out=torch.randn(5)) for _ in range(4)]
    for i, r in enumerate(recs):
        cache.put(('fp', i), r)
        assert cache.bytes <= 1000
    assert cache.peak_bytes == 840 and cache.num_spilled == 2  # each record is 420 bytes: two fit
    for i, r in enumerate(recs):
        got = cache.get(('fp', i))
        assert torch.equal(got['args'][0], r['args'][0]) and got['args'][1] == (3, 4)
        assert torch.equal(got['out'], r['out'])
    cache.drop('fp')
    assert len(cache) == 0 and cache.bytes == 0
    with pytest.raises(ValueError, match='budget_bytes=-1 is invalid'):
        RecordCache(-1)


def test_reconstruction_lowers_the_unit_error_and_deploys_hard_rounding():
    net, sites, summary = _run(iters=60, units=['blocks.0'])
    unit = summary['reconstruction']['units'][0]
    assert unit['error_after'] < unit['error_before']
    ada = [q for _, _, q in iter_quantizers(sites, weights=True) if isinstance(q, AdaRoundQuantizer)]
    assert len(ada) == len([s for s in sites if s.kind == 'linear' or s.kind == 'conv'])
    modes = {q.site.rpartition(':')[0]: q.mode for q in ada}
    assert modes['blocks.0.attn.qkv'] == 'hard' and modes['head'] == 'nearest'  # head: not a unit here
    assert not any(p.requires_grad for q in ada for p in q.parameters())
    weights = [p for n, p in net.named_parameters() if 'quantizer' not in n]
    assert weights and all(p.requires_grad for p in weights)  # model weights: flags restored as they were


def test_qdrop_mixing():
    gen = torch.Generator().manual_seed(0)
    q, f = torch.zeros(200, 50), torch.ones(200, 50)
    mixed = _mix((q, (7, 8)), (f, (7, 8)), 0.5, gen)
    assert mixed[1] == (7, 8)
    frac_q = (mixed[0] == 0).float().mean()
    assert 0.45 < frac_q < 0.55 and set(mixed[0].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(_mix(q, f, 1.0, gen), q) and torch.equal(_mix(q, f, 0.0, gen), f)


def test_attention_kl_matches_a_plain_reference():
    torch.manual_seed(0)
    fp = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    qt = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    for dim in (-1, 1):
        term = build_loss_term(dict(type='AttentionKL', temperature=4, lam=0.1, dim=dim))
        p_fp = F.softmax(fp / 4, dim=dim)
        p_q = F.softmax(qt / 4, dim=dim)
        ref = 0.0
        n = 0
        for idx in torch.cartesian_prod(*[torch.arange(s) for i, s in enumerate(fp.shape) if i != dim % 4]):
            sl = list(idx.tolist())
            sl.insert(dim % 4, slice(None))
            a, b = p_fp[tuple(sl)], p_q[tuple(sl)]
            ref += float((a * (a.log() - b.log())).sum())
            n += 1
        assert float(term([qt], [fp])) == pytest.approx(10 * 16 * ref / n, rel=1e-5)
    assert float(AttentionKL()([fp], [fp])) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r'dim=2 is invalid: allowed values are \[-1'):
        AttentionKL(dim=2)
    with pytest.raises(ValueError, match="type='Nope' is invalid"):
        build_loss_term(dict(type='Nope'))


def test_attention_kl_term_runs_on_attention_units():
    _, _, summary = _run(units=None, unit='module', loss_terms=[dict(type='AttentionKL')])
    terms = {u['name']: u.get('loss_terms') for u in summary['reconstruction']['units']}
    assert terms['blocks.0.attn'] == ['AttentionKL'] and terms['blocks.0.mlp'] == []
    assert summary['reconstruction']['schedule']['loss_terms'][0]['temperature'] == 4.0


def test_output_mse_reduction():
    p, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert float(output_mse(p, t)) == pytest.approx(float(((p - t) ** 2).sum(-1).mean()))
    p4, t4 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert float(output_mse((p4, [2]), (t4, [2]))) == pytest.approx(float(((p4 - t4) ** 2).sum(1).mean()))


def test_capture_without_a_stop_catching_loop_falls_back_to_full_passes():
    net, sites, _ = tiny_vit()
    images = [torch.randn(4, 3, 32, 32) for _ in range(2)]

    def run():  # a calibration loop that does not catch StopForward
        with torch.no_grad():
            for x in images:
                net(x)
        return len(images)

    summary = MinMaxPTQ(w_bits=4, a_bits=4, reconstruction=dict(FAST)).run(net, sites, run)
    assert [u['records'] for u in summary['reconstruction']['units']] == [2, 2]
    assert issubclass(StopForward, Exception)


@pytest.mark.parametrize('bad, match', [
    (dict(unit='layer'), "reconstruction.unit='layer' is invalid"),
    (dict(iters=0), 'reconstruction.iters=0 is invalid: allowed values are >= 1'),
    (dict(qdrop_prob=1.5), 'reconstruction.qdrop_prob=1.5 is invalid'),
    (dict(a_lr_schedule='step'), "a_lr_schedule='step' is invalid"),
    (dict(beta=(20, 0)), 'reconstruction.beta=(20, 0) is invalid'),
    (dict(warmup=1.0), 'reconstruction.warmup=1.0 is invalid'),
])
def test_bad_settings_fail_clearly(bad, match):
    with pytest.raises(ValueError, match=match.replace('(', r'\(').replace(')', r'\)')):
        ReconstructionConfig(**bad)
    with pytest.raises(TypeError):
        ReconstructionConfig(iterations=5)


def test_qdrop_recipe_defaults_and_overrides():
    method = QDrop(w_bits=4, a_bits=4, reconstruction=dict(iters=100))
    d = method.describe()
    assert d['type'] == 'QDrop' and d['range_method'] == 'mse'
    r = d['reconstruction']
    assert (r['unit'], r['iters'], r['qdrop_prob'], r['reg_weight'], r['beta'], r['warmup'], r['w_lr'], r['a_lr'],
            r['seed']) == ('block', 100, 0.5, 0.01, [20.0, 2.0], 0.2, 1e-3, 4e-5, 1005)
    assert QDrop().reconstruction.iters == 20000
    assert MinMaxPTQ().reconstruction is None and "reconstruction" not in MinMaxPTQ().describe()
    assert QDrop(reconstruction=False).reconstruction is None
    assert MinMaxPTQ(reconstruction=True).reconstruction.iters == 20000
    with pytest.raises(ValueError, match='reconstruction=5 is invalid: allowed values are None, False, True'):
        MinMaxPTQ(reconstruction=5)


def test_adaround_soft_mode_keeps_floor_only_while_weight_and_scale_are_unchanged():
    torch.manual_seed(0)
    w = torch.randn(6, 5)
    q = AdaRoundQuantizer(bits=4)
    q.observing = True
    q(w)
    q.freeze()
    q.set_mode('soft')
    q.alpha.requires_grad_(True)

    def reference():
        h = torch.clamp(torch.sigmoid(q.alpha) * 1.2 - 0.1, 0, 1)
        return (torch.clamp(torch.floor(w / q.scale) + h + q.zero_point, 0, 15) - q.zero_point) * q.scale

    assert torch.equal(q(w), reference())
    with torch.no_grad():
        q.alpha.add_(0.3)
    assert torch.equal(q(w), reference())  # a step on the rounding variables reaches the output
    q(w).sum().backward()
    assert q.alpha.grad is not None and q.alpha.grad.abs().sum() > 0
    w.mul_(1.5)  # an in-place change of the weight invalidates the kept floor
    assert torch.equal(q(w), reference())


def test_recipes_reconstruction_defaults():
    from quant_hooks.methods import ADFQViT, QHyViT
    adfq = ADFQViT(w_bits=4, a_bits=4, reconstruction=dict(iters=5)).reconstruction
    assert (adfq.unit, adfq.iters, adfq.w_lr, adfq.a_lr, adfq.a_lr_schedule, adfq.qdrop_prob, adfq.seed) == (
        'module', 5, 3e-3, 4e-5, 'cosine', 0.5, 1005)
    kl = adfq.terms[0]
    assert isinstance(kl, AttentionKL) and (kl.temperature, kl.lam, kl.dim, kl.weight) == (4.0, 0.1, -1, 10.0)
    assert ADFQViT().reconstruction is None and ADFQViT(reconstruction=True).reconstruction.iters == 3000
    qhy = QHyViT(reconstruction=True).reconstruction
    assert (qhy.unit, qhy.group_tag, qhy.qdrop_prob) == ('block', 'bridge_', 1.0)


def test_adfq_vit_module_wise_optimization_with_the_attention_kl_term():
    from quant_hooks.methods import ADFQViT
    net, sites, run = tiny_vit()
    summary = ADFQViT(w_bits=4, a_bits=4, reconstruction=dict(iters=6, progress=False)).run(net, sites, run)
    units = {u['name']: u for u in summary['reconstruction']['units']}
    assert list(units) == ['patch_embed', 'blocks.0.attn', 'blocks.0.mlp', 'head']
    assert units['blocks.0.attn']['loss_terms'] == ['AttentionKL'] and units['blocks.0.mlp']['loss_terms'] == []
    assert units['blocks.0.attn']['rounding_quantizers'] == 2 and units['blocks.0.attn']['learned_scales'] >= 1
    assert 'outlier_ratio' in summary


def test_log_quantizer_autograd_path_is_finite_on_zero_probabilities():
    from quant_hooks.quantizers.functional import log_codes, log_dequant, log_fake_quant
    x = torch.tensor([0.0, 1e-30, 0.01, 0.3, 1.0])
    scale = torch.tensor(1.0, requires_grad=True)
    for bits, k, flush in ((4, 2, True), (4, 1, False), (3, 2, False)):
        ref = log_fake_quant(x, scale.detach(), bits, k, flush)  # the no-autograd path
        codes, mask = log_codes(x, scale, bits, k, flush)
        out = log_dequant(codes, scale, k, mask)
        assert torch.equal(out.detach(), ref)
        out.sum().backward()
        assert torch.isfinite(scale.grad).all()
        xg = x.clone().requires_grad_(True)
        log_fake_quant(xg, scale.detach(), bits, k, flush).sum().backward()
        assert torch.isfinite(xg.grad).all()
        scale.grad = None


def test_a_unit_whose_error_rises_is_reverted():
    net, sites, summary = _run(iters=3, w_lr=5.0, a_lr=0.0, warmup=0.0, units=['blocks.0.mlp'],
                               keep_better=True)  # wild steps
    unit = summary['reconstruction']['units'][0]
    fc1 = sites[[s.name for s in sites].index('blocks.0.mlp.fc1')].module.weight_quantizer
    assert unit['error_after'] > unit['error_before'] and unit['reverted']
    assert fc1.mode == 'nearest'
    net2, sites2, summary2 = _run(iters=3, w_lr=5.0, a_lr=0.0, warmup=0.0, units=['blocks.0.mlp'])
    assert not summary2['reconstruction']['units'][0]['reverted']
    assert sites2[[s.name for s in sites2].index('blocks.0.mlp.fc1')].module.weight_quantizer.mode == 'hard'
