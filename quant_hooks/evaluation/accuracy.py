"""Top-k classification accuracy (ImageNet top-1 / top-5), in percent."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS


def _label(value) -> int:
    return int(torch.as_tensor(value).reshape(-1)[0])


@METRICS.register_module()
class TopKAccuracy(BaseMetric):
    """Percentage of images whose ground-truth label is among the ``k`` highest scores, for each ``k``.

    Reads ``pred_score`` (class scores) and ``gt_label`` of each prediction; keys are ``accuracy/top{k}``.
    Ties are broken as ``torch.topk`` breaks them.

    Args:
        topk: the values of k, each >= 1.
        collect_device: ``cpu`` or ``gpu``, where results of all ranks are gathered.
        prefix: key prefix, ``accuracy`` by default.
    """

    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not topk or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in topk):
            raise ValueError(f'topk={topk!r} is invalid: allowed values are integers >= 1')
        self.topk = topk

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        maxk = max(self.topk)
        for ds in data_samples:
            if 'pred_score' not in ds or 'gt_label' not in ds:
                raise KeyError(f'TopKAccuracy needs pred_score and gt_label in each prediction, got keys '
                               f'{sorted(ds)}')
            score = torch.as_tensor(ds['pred_score']).reshape(-1)
            num_classes = score.numel()
            gt = _label(ds['gt_label'])
            if not 0 <= gt < num_classes:
                raise ValueError(f'gt_label={gt} of {ds.get("img_path", "an image")} is out of range for '
                                 f'{num_classes} class scores: allowed values are 0 .. {num_classes - 1}')
            if maxk > num_classes:
                raise ValueError(f'topk={self.topk} is invalid for {num_classes} classes: allowed values are '
                                 f'<= {num_classes}')
            self.results.append(dict(topk=score.topk(maxk).indices.cpu(), gt_label=gt))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            raise ValueError('TopKAccuracy received no predictions')
        top = torch.stack([r['topk'] for r in results])  # [N, maxk]
        gt = torch.tensor([r['gt_label'] for r in results])[:, None]
        hits = top == gt
        return {f'top{k}': float(hits[:, :k].any(dim=1).float().mean() * 100.0) for k in self.topk}
