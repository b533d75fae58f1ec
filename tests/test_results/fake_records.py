"""Valid result records built without running a model, for store / leaderboard / regression tests."""
from __future__ import annotations

import copy
import uuid

from quant_hooks.results.schema import SCHEMA_VERSION

_METRIC_KEYS = dict(detection=('coco/bbox_mAP', 'coco/segm_mAP'), classification=('accuracy/top1', ),
                    fidelity=('feature/sqnr_db', 'feature/cosine_mean'))


def fake_record(model: str = 'mask_rcnn_swin_t', method: str = 'MinMaxPTQ', w_bits: int = 8, a_bits: int = 8,
                seed: int = 0, quant: dict | None = None, float_: dict | None = None, task: str = 'detection',
                created_at: str = '2026-01-01T00:00:00+00:00', commit: str = 'a' * 40, run_id: str | None = None,
                **extra_fields) -> dict:
    """A schema-valid record; ``quant`` / ``float_`` are the metrics of the two passes."""
    record = dict(
        schema_version=SCHEMA_VERSION, run_id=run_id or uuid.uuid4().hex, created_at=created_at, task=task,
        model=model, config=f'configs/{model}_{method.lower()}_w{w_bits}a{a_bits}.py',
        config_hash=f'{abs(hash((model, method, w_bits, a_bits, seed))):016x}'[:16], checkpoint=f'{model}.pth',
        checkpoint_sha256='0123456789abcdef', method=dict(type=method, w_bits=w_bits, a_bits=a_bits),
        w_bits=w_bits, a_bits=a_bits, scope='backbone',
        calibration=dict(split='calib.json', num_images=32, seed=seed, images=[f'{i:012d}.jpg' for i in range(3)]),
        metrics={}, timings=dict(calibration_s=1.5, reconstruction_s=None, evaluation_s=10.0),
        peak_memory=dict(cpu_rss_mb=1000.0, gpu_mb=None), git=dict(commit=commit, dirty=False),
        versions=dict(python='3.11.7', torch='2.14.1', mmcv='2.1.0', mmdet='3.3.0', mmengine='0.10.7',
                      timm='1.0.31'),
        machine=dict(hostname='test', platform='Linux', cpu_count=2), extra={})
    if float_ is not None:
        record['metrics']['float'] = dict(float_)
    record['metrics']['quant'] = dict(quant if quant is not None else {k: 0.5 for k in _METRIC_KEYS[task]})
    record.update(copy.deepcopy(extra_fields))
    return record
