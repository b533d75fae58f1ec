"""The result record: one quantized test run, versioned and validated on every write and read.

A record is a plain JSON-able dict. :data:`FIELDS` lists its required top-level fields with their types;
``validate_record`` refuses a record that lacks one (naming it), has one of the wrong type, or carries a schema
version this code does not know. Fields beyond :data:`FIELDS` (adapter, sites, notes, ``extra``) are kept as
they are.
"""
from __future__ import annotations

from typing import Any

#: the version written into new records; readers accept exactly the versions in SUPPORTED_VERSIONS
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1, )

#: the kinds of run a record describes
TASKS = ('detection', 'classification', 'fidelity', 'speed')

_NUM = (int, float)
_OPT_STR = (str, type(None))
_OPT_NUM = (int, float, type(None))

#: required field -> allowed types (``dict`` fields list their own required sub-fields in SUBFIELDS)
FIELDS: dict[str, tuple[type, ...]] = {
    'schema_version': (int, ),
    'run_id': (str, ),
    'created_at': (str, ),
    'task': (str, ),
    'model': (str, ),
    'config': (str, ),
    'config_hash': (str, ),
    'checkpoint': _OPT_STR,
    'checkpoint_sha256': _OPT_STR,
    'method': (dict, ),
    'w_bits': (int, ),
    'a_bits': (int, ),
    'scope': (str, ),
    'calibration': (dict, ),
    'metrics': (dict, ),
    'timings': (dict, ),
    'peak_memory': (dict, ),
    'git': (dict, ),
    'versions': (dict, ),
    'machine': (dict, ),
}

#: dict field -> required sub-field -> allowed types
SUBFIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    'method': {'type': (str, )},
    'calibration': {'split': _OPT_STR, 'num_images': (int, type(None)), 'seed': (int, type(None)),
                    'images': (list, )},
    'timings': {'calibration_s': _OPT_NUM, 'reconstruction_s': _OPT_NUM, 'evaluation_s': _OPT_NUM},
    'peak_memory': {'cpu_rss_mb': _OPT_NUM, 'gpu_mb': _OPT_NUM},
    'git': {'commit': _OPT_STR, 'dirty': (bool, type(None))},
    'versions': {'python': (str, ), 'torch': _OPT_STR, 'mmcv': _OPT_STR, 'mmdet': _OPT_STR, 'mmengine': _OPT_STR,
                 'timm': _OPT_STR},
    'machine': {'hostname': (str, ), 'platform': (str, ), 'cpu_count': (int, type(None))},
}


class RecordError(ValueError):
    """A result record does not follow the schema."""


def _type_names(types: tuple[type, ...]) -> str:
    return ' or '.join('null' if t is type(None) else t.__name__ for t in types)


def _check_type(name: str, value: Any, types: tuple[type, ...], where: str) -> None:
    # bool is an int subclass: only accept it where bool is asked for
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise RecordError(f'{where}field {name!r} must be {_type_names(types)}, got {type(value).__name__} '
                          f'{value!r:.80}')


def validate_record(record: Any, where: str = '') -> dict:
    """Check ``record`` against the schema and return it.

    Args:
        record: the record dict.
        where: prefix for error messages (e.g. ``'store row 12: '``).

    Raises:
        RecordError: naming the first missing or mistyped field, or the unknown schema version.
    """
    if not isinstance(record, dict):
        raise RecordError(f'{where}a result record must be a dict, got {type(record).__name__}')
    version = record.get('schema_version')
    if 'schema_version' in record and version not in SUPPORTED_VERSIONS:
        raise RecordError(f'{where}schema_version={version!r} is not supported: allowed values are '
                          f'{list(SUPPORTED_VERSIONS)}')
    for name, types in FIELDS.items():
        if name not in record:
            raise RecordError(f'{where}result record is missing the required field {name!r}')
        _check_type(name, record[name], types, where)
    for name, subs in SUBFIELDS.items():
        for sub, types in subs.items():
            if sub not in record[name]:
                raise RecordError(f'{where}result record is missing the required field {name}.{sub!r}')
            _check_type(f'{name}.{sub}', record[name][sub], types, where)
    if record['task'] not in TASKS:
        raise RecordError(f'{where}field \'task\'={record["task"]!r} is invalid: allowed values are {list(TASKS)}')
    for phase, values in record['metrics'].items():
        if not isinstance(values, dict):
            raise RecordError(f'{where}field metrics.{phase!r} must be a dict of metric name -> number')
        for key, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, _NUM)):
                raise RecordError(f'{where}field metrics.{phase}.{key!r} must be a number or null, got {value!r:.80}')
    return record


def to_jsonable(obj: Any) -> Any:
    """``obj`` with tuples as lists and numpy / torch scalars as Python numbers; anything else unknown becomes
    ``str``. Non-finite floats stay floats (Python's json writes and reads them as ``Infinity`` / ``NaN``)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    item = getattr(obj, 'item', None)
    if callable(item) and getattr(obj, 'ndim', 0) == 0:
        return to_jsonable(item())
    tolist = getattr(obj, 'tolist', None)
    if callable(tolist):
        return to_jsonable(tolist())
    return str(obj)
