"""Assemble the full result record of a run from the PTQ hook's record and the resolved config."""
from __future__ import annotations

import datetime
import os.path as osp
import re
import uuid

from . import provenance
from .schema import SCHEMA_VERSION, to_jsonable, validate_record

_BITS_SUFFIX = re.compile(r'_[a-z0-9]+_w\d+a\d+(_.*)?$')


def infer_task(cfg_dict: dict) -> str:
    """``detection`` (mmdet scope), ``fidelity`` (a FeatureFidelity evaluator) or ``classification``; the config
    key ``quant_task`` overrides."""
    if cfg_dict.get('quant_task'):
        return cfg_dict['quant_task']
    if cfg_dict.get('default_scope') == 'mmdet':
        return 'detection'
    evaluators = cfg_dict.get('test_evaluator') or []
    evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
    if any(str(e.get('type', '')).endswith('FeatureFidelity') for e in evaluators if isinstance(e, dict)):
        return 'fidelity'
    return 'classification'


def infer_model_name(cfg_dict: dict, config_path: str) -> str:
    """The config key ``model_name``, else the config file name without its ``_<method>_w<b>a<b>...`` tail (a
    config built in memory: the model's type)."""
    if cfg_dict.get('model_name'):
        return str(cfg_dict['model_name'])
    if not config_path:
        model = cfg_dict.get('model')
        return str(model.get('type', 'model')) if isinstance(model, dict) else 'model'
    stem = osp.splitext(osp.basename(config_path))[0]
    return _BITS_SUFFIX.sub('', stem) or stem


def infer_scope(adapter: dict | None) -> str:
    """The adapter's ``scope`` (``backbone``, ``full`` ...), ``'model'`` when the adapter has none."""
    return str((adapter or {}).get('scope') or 'model')


def _calibration(calib: dict | None) -> dict:
    calib = dict(calib or {})
    dataset = calib.get('dataset') or {}
    calib.setdefault('split', dataset.get('ann_file') if isinstance(dataset, dict) else None)
    calib.setdefault('num_images', None)
    calib.setdefault('seed', None)
    calib.setdefault('images', [])
    return calib


def build_record(run: dict, cfg_dict: dict, config_path: str, checkpoint: str | None, timings: dict,
                 extra: dict | None = None) -> dict:
    """The validated result record of one run.

    Args:
        run: the PTQ hook's record (method, adapter, calibration, metrics, sites, notes).
        cfg_dict: the resolved config as a plain dict.
        config_path: the config file the run started from (``''`` for a config built in memory).
        checkpoint: the weights (a file path or a named source such as ``timm:deit_tiny_patch16_224``).
        timings: ``calibration_s``, ``reconstruction_s``, ``evaluation_s`` (seconds) and any more.
        extra: free-form labels (suite name, sensitivity unit, ...), stored under ``extra``.
    """
    method = dict(run.get('method') or {})
    record = dict(run)
    record.update(
        schema_version=SCHEMA_VERSION,
        run_id=uuid.uuid4().hex,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        task=infer_task(cfg_dict),
        model=infer_model_name(cfg_dict, config_path),
        config=config_path or '',
        config_hash=provenance.config_hash(cfg_dict),
        checkpoint=checkpoint,
        checkpoint_sha256=provenance.file_sha256(checkpoint),
        method=method,
        w_bits=int(method.get('w_bits', 0)),
        a_bits=int(method.get('a_bits', 0)),
        scope=infer_scope(run.get('adapter')),
        calibration=_calibration(run.get('calibration')),
        metrics=dict(run.get('metrics') or {}),
        timings=dict(dict(calibration_s=None, reconstruction_s=None, evaluation_s=None), **timings),
        peak_memory=provenance.peak_memory(),
        git=provenance.git_state(),
        versions=provenance.versions(),
        machine=provenance.machine(),
        extra=dict(extra or {}),
    )
    return validate_record(to_jsonable(record))
