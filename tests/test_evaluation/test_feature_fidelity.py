"""Feature fidelity numbers against plain formulas, and the float / quant phases of the metric."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.logging import MessageHub

from quant_hooks.evaluation import FeatureFidelity, feature_fidelity, nearest_neighbours, sqnr_db


def test_sqnr_and_cosine_match_formulas():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(6, 5, generator=g)
    noisy = ref + 0.1 * torch.randn(6, 5, generator=g)
    signal = sum(float(v)**2 for v in ref.flatten())
    noise = sum(float(a - b)**2 for a, b in zip(ref.flatten(), noisy.flatten()))
    assert sqnr_db(ref, noisy) == pytest.approx(10 * math.log10(signal / noise))
    assert sqnr_db(ref, ref) == math.inf
    out = feature_fidelity(ref, noisy, torch.arange(6) % 3)
    cos = [float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in zip(ref, noisy)]
    assert out['cosine_mean'] == pytest.approx(sum(cos) / 6) and out['cosine_min'] == pytest.approx(min(cos))


def test_nearest_neighbours_and_agreement_match_a_loop():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(9, 4, generator=g)
    nn = nearest_neighbours(feats)
    for i in range(9):
        sims = {j: float(torch.dot(feats[i], feats[j]) / (feats[i].norm() * feats[j].norm())) for j in range(9)
                if j != i}
        assert int(nn[i]) == max(sims, key=sims.get)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2])
    other = feats.flip(0)
    out = feature_fidelity(feats, other, labels)
    pred_ref, pred_other = labels[nn], labels[nearest_neighbours(other)]
    assert out['knn_top1_reference'] == pytest.approx(100 * float((pred_ref == labels).float().mean()))
    assert out['knn_label_agreement'] == pytest.approx(100 * float((pred_ref == pred_other).float().mean()))
    with pytest.raises(ValueError, match='at least 2 images'):
        nearest_neighbours(feats[:1])
    with pytest.raises(ValueError, match='feature shapes differ'):
        feature_fidelity(feats, feats[:, :2], labels)


def test_metric_keeps_the_float_pass_as_reference():
    hub = MessageHub.get_current_instance()
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(5, 3, generator=g)
    preds = [dict(pred_feats=f, gt_label=torch.tensor([i % 2]), sample_idx=i) for i, f in enumerate(feats)]
    metric = FeatureFidelity()
    hub.update_info('ptq_phase', 'float')
    metric.process(None, preds[::-1])  # order of arrival does not matter
    out = metric.evaluate(5)
    assert set(out) == {'feature/knn_top1', 'feature/num_images'}
    hub.update_info('ptq_phase', 'quant')
    quant = [dict(p, pred_feats=p['pred_feats'] * 2) for p in preds]
    metric.process(None, quant)
    out = metric.evaluate(5)
    assert out['feature/cosine_mean'] == pytest.approx(1.0)
    assert out['feature/sqnr_db'] == pytest.approx(0.0, abs=1e-9)  # noise = signal
    assert out['feature/knn_label_agreement'] == 100.0
    hub.update_info('ptq_phase', None)
