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


def leaderboard_fixture() -> list[dict]:
    """Records of a small benchmark: two detectors x two methods x bit widths x seeds, a superseded rerun, and one
    classification model."""
    out = []
    day = iter(range(1, 29))

    def add(model, method, bits, seed, box, mask, fbox=0.435, fmask=0.395, task='detection', **kw):
        quant = {'coco/bbox_mAP': box, 'coco/segm_mAP': mask}
        flt = {'coco/bbox_mAP': fbox, 'coco/segm_mAP': fmask}
        out.append(fake_record(model=model, method=method, w_bits=bits, a_bits=bits, seed=seed, quant=quant,
                               float_=flt, task=task, created_at=f'2026-02-{next(day):02d}T00:00:00+00:00',
                               run_id=f'{model}-{method}-{bits}-{seed}-{len(out)}', **kw))

    for seed, (box, mask) in enumerate([(0.430, 0.392), (0.432, 0.390), (0.434, 0.391)]):
        add('swin_t', 'MinMaxPTQ', 8, seed, box, mask)
    add('swin_t', 'MinMaxPTQ', 4, 0, 0.101, 0.150)
    add('swin_t', 'MinMaxPTQ', 4, 0, 0.105, 0.153)  # a rerun of the same seed: this later one counts
    add('swin_t', 'MinMaxPTQ', 4, 1, 0.111, 0.149)
    add('swin_t', 'PercentilePTQ', 8, 0, 0.433, 0.393)
    add('swin_t', 'PercentilePTQ', 4, 0, 0.300, 0.280)
    add('swin_s', 'MinMaxPTQ', 6, 0, 0.450, 0.400, fbox=0.480, fmask=0.420, commit='b' * 40)
    add('swin_s', 'MinMaxPTQ', 6, 1, 0.460, 0.404, fbox=0.480, fmask=0.420, commit='b' * 40)
    out.append(fake_record(model='deit_s', method='OMSEPTQ', w_bits=4, a_bits=8, seed=0, task='classification',
                           quant={'accuracy/top1': 70.125}, float_={'accuracy/top1': 79.875},
                           created_at='2026-03-01T00:00:00+00:00', run_id='deit_s-omse'))
    return out
