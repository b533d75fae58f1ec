"""TopKAccuracy against a plain loop, and its errors."""
from __future__ import annotations

import pytest
import torch

from quant_hooks.evaluation import TopKAccuracy


def reference_topk(scores, labels, k):
    hits = 0
    for s, y in zip(scores, labels):
        order = sorted(range(len(s)), key=lambda c: -float(s[c]))
        hits += int(y in order[:k])
    return 100.0 * hits / len(labels)


def run_metric(metric, scores, labels, batch=3):
    preds = [dict(pred_score=s, gt_label=torch.tensor([y])) for s, y in zip(scores, labels)]
    for i in range(0, len(preds), batch):
        metric.process(None, preds[i:i + batch])
    return metric.evaluate(len(preds))


def test_topk_matches_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 10, generator=g)
    labels = torch.randint(0, 10, (40, ), generator=g).tolist()
    out = run_metric(TopKAccuracy(topk=(1, 3, 5)), scores, labels)
    assert set(out) == {'accuracy/top1', 'accuracy/top3', 'accuracy/top5'}
    for k in (1, 3, 5):
        assert out[f'accuracy/top{k}'] == pytest.approx(reference_topk(scores, labels, k))
    assert 0 < out['accuracy/top1'] < out['accuracy/top5'] < 100


def test_errors_are_clear():
    with pytest.raises(ValueError, match='topk=.* is invalid'):
        TopKAccuracy(topk=(0, ))
    with pytest.raises(ValueError, match=r'gt_label=12 .* out of range for 10 class scores'):
        run_metric(TopKAccuracy(), torch.rand(1, 10), [12])
    with pytest.raises(ValueError, match='invalid for 3 classes'):
        run_metric(TopKAccuracy(topk=(1, 5)), torch.rand(1, 3), [0])
    with pytest.raises(KeyError, match='needs pred_score and gt_label'):
        TopKAccuracy().process(None, [dict(pred_label=1)])
