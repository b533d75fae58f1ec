"""The metrics tables and regression checks know: their record key, display scale and label."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric.

    Args:
        name: short name used on command lines and in reference files (``box_ap``).
        key: the metric key in a record's ``metrics`` (``coco/bbox_mAP``).
        label: column title (``box AP``).
        scale: factor from the stored value to the shown one (mmdet's mAP 0-1 -> AP points).
        decimals: digits shown in Markdown / HTML.
    """

    name: str
    key: str
    label: str
    scale: float = 1.0
    decimals: int = 2


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec('box_ap', 'coco/bbox_mAP', 'box AP', 100.0, 1),
    MetricSpec('mask_ap', 'coco/segm_mAP', 'mask AP', 100.0, 1),
    MetricSpec('top1', 'accuracy/top1', 'top-1', 1.0, 2),
    MetricSpec('sqnr', 'feature/sqnr_db', 'SQNR dB', 1.0, 2),
    MetricSpec('cosine', 'feature/cosine_mean', 'cosine', 1.0, 4),
    MetricSpec('knn_top1', 'feature/knn_top1', '1-NN top-1', 1.0, 2),
)}

#: the columns of each task's table
TASK_METRICS: dict[str, tuple[str, ...]] = {
    'detection': ('box_ap', 'mask_ap'),
    'classification': ('top1', ),
    'fidelity': ('sqnr', 'cosine', 'knn_top1'),
    'speed': (),
}


def metric_spec(name_or_key: str) -> MetricSpec:
    """The spec of a metric by short name or record key; an unknown record key gets a plain spec."""
    if name_or_key in METRICS:
        return METRICS[name_or_key]
    for spec in METRICS.values():
        if spec.key == name_or_key:
            return spec
    if '/' in name_or_key:
        return MetricSpec(name_or_key, name_or_key, name_or_key)
    raise ValueError(f'metric {name_or_key!r} is invalid: allowed names are {sorted(METRICS)} or a record metric '
                     "key such as 'coco/bbox_mAP'")


def metric_value(record: dict, spec: MetricSpec, phase: str = 'quant') -> float | None:
    """The scaled value of a metric in one pass of a record (``None`` when absent or NaN)."""
    value = record.get('metrics', {}).get(phase, {}).get(spec.key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) * spec.scale


def method_label(record: dict) -> str:
    """The method name shown in tables: ``extra.method_name`` if given, else the method type without the
    ``PTQ`` suffix of the class name (``MinMaxPTQ`` -> ``MinMax``), marked when its searches scored a sample
    (``QHyViT (max_samples=65536)``), so sampled runs are never grouped with exact ones."""
    name = (record.get('extra') or {}).get('method_name')
    if name:
        return str(name)
    kind = str(record['method'].get('type', '?'))
    label = kind[:-3] if kind.endswith('PTQ') and len(kind) > 3 else kind
    samples = record['method'].get('max_samples')
    return label if samples is None else f'{label} (max_samples={samples})'
