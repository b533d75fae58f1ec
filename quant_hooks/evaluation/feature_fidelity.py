"""Fidelity of a quantized model's features (or outputs) to the float model's, on the same images."""
from __future__ import annotations

import math

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub

from ..registry import METRICS

#: the MessageHub info key PTQHook sets to 'float' or 'quant' before each test run
PHASE_KEY = 'ptq_phase'


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10·log10(Σ ref² / Σ (ref - test)²)`` in dB (``inf`` if equal)."""
    noise = (reference.double() - test.double()).pow(2).sum()
    signal = reference.double().pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10.0 * torch.log10(signal / noise))


def nearest_neighbours(feats: torch.Tensor) -> torch.Tensor:
    """Leave-one-out nearest neighbour of every row by cosine similarity (ties: the lowest index)."""
    if feats.shape[0] < 2:
        raise ValueError(f'nearest-neighbour evaluation needs at least 2 images, got {feats.shape[0]}')
    f = torch.nn.functional.normalize(feats.double(), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-math.inf)
    return sim.argmax(dim=1)


def feature_fidelity(reference: torch.Tensor, test: torch.Tensor, labels: torch.Tensor) -> dict:
    """SQNR, cosine similarity and 1-NN agreement of ``test`` features against ``reference`` ones.

    Args:
        reference, test: ``[N, D]`` features of the same images in the same order.
        labels: ``[N]`` class labels for leave-one-out 1-NN label prediction.

    Returns:
        ``sqnr_db``; ``cosine_mean`` / ``cosine_min`` (per image); ``knn_top1`` / ``knn_top1_reference`` (1-NN
        label accuracy, percent); ``knn_label_agreement`` (percent of images whose predicted label is the same
        with both feature sets); ``knn_same_neighbour`` (percent with the very same neighbour).
    """
    if reference.shape != test.shape:
        raise ValueError(f'feature shapes differ: reference {tuple(reference.shape)} vs test {tuple(test.shape)}')
    cos = torch.nn.functional.cosine_similarity(reference.double(), test.double(), dim=1)
    nn_ref, nn_test = nearest_neighbours(reference), nearest_neighbours(test)
    pred_ref, pred_test = labels[nn_ref], labels[nn_test]
    pct = lambda mask: float(mask.double().mean() * 100.0)  # noqa: E731
    return dict(sqnr_db=sqnr_db(reference, test), cosine_mean=float(cos.mean()), cosine_min=float(cos.min()),
                knn_top1=pct(pred_test == labels), knn_top1_reference=pct(pred_ref == labels),
                knn_label_agreement=pct(pred_test == pred_ref), knn_same_neighbour=pct(nn_test == nn_ref))


@METRICS.register_module()
class FeatureFidelity(BaseMetric):
    """Feature fidelity of the quantized pass against the float pass of ``tools/quant_test.py``.

    In the float pass (PTQHook sets the MessageHub info ``ptq_phase`` to ``float``) the features are kept as
    the reference and the 1-NN label accuracy is reported; in the quantized pass the features are compared with
    that reference image by image (matched by ``sample_idx``): :func:`feature_fidelity`. Without a float pass
    (``--no-float``) only the 1-NN accuracy is reported.

    Args:
        feature_key: the prediction entry holding the features (``pred_feats`` of a headless
            :class:`~quant_hooks.models.TimmClassifier`; ``pred_score`` compares class probabilities).
        collect_device, prefix: see :class:`mmengine.evaluator.BaseMetric`; keys are ``feature/...``.
    """

    default_prefix = 'feature'

    def __init__(self, feature_key: str = 'pred_feats', collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.feature_key = feature_key
        self.reference: dict[int, torch.Tensor] | None = None

    def process(self, data_batch, data_samples) -> None:
        for ds in data_samples:
            for key in (self.feature_key, 'gt_label', 'sample_idx'):
                if key not in ds:
                    raise KeyError(f'FeatureFidelity needs {key!r} in each prediction, got keys {sorted(ds)}')
            self.results.append(dict(idx=int(ds['sample_idx']), label=int(torch.as_tensor(ds['gt_label']).reshape(
                -1)[0]), feat=torch.as_tensor(ds[self.feature_key]).detach().float().reshape(-1).cpu()))

    def compute_metrics(self, results: list) -> dict:
        results = sorted(results, key=lambda r: r['idx'])
        idx = [r['idx'] for r in results]
        feats = torch.stack([r['feat'] for r in results])
        labels = torch.tensor([r['label'] for r in results])
        phase = MessageHub.get_current_instance().get_info(PHASE_KEY)
        if phase == 'float':
            self.reference = dict(zip(idx, feats))
        if phase != 'quant' or self.reference is None:
            return dict(knn_top1=feature_fidelity(feats, feats, labels)['knn_top1'], num_images=len(idx))
        missing = [i for i in idx if i not in self.reference]
        if missing:
            raise ValueError(f'{len(missing)} images of the quantized pass have no float reference, e.g. sample_idx '
                             f'{missing[:5]}: both passes must run on the same dataset')
        ref = torch.stack([self.reference[i] for i in idx])
        return dict(feature_fidelity(ref, feats, labels), num_images=len(idx))
