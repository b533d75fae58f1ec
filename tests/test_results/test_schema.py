"""The record schema: valid records pass, every missing required field is refused by name."""
from __future__ import annotations

import math

import pytest
from fake_records import fake_record

from quant_hooks.results.schema import FIELDS, SUBFIELDS, RecordError, to_jsonable, validate_record


def test_valid_record_passes_unchanged():
    record = fake_record(float_={'coco/bbox_mAP': 0.4})
    assert validate_record(record) is record


@pytest.mark.parametrize('field', sorted(FIELDS))
def test_missing_required_field_is_named(field):
    record = fake_record()
    del record[field]
    with pytest.raises(RecordError, match=f"missing the required field '{field}'"):
        validate_record(record)


@pytest.mark.parametrize('field,sub', [(f, s) for f, subs in SUBFIELDS.items() for s in subs])
def test_missing_sub_field_is_named(field, sub):
    record = fake_record()
    del record[field][sub]
    with pytest.raises(RecordError, match=f"missing the required field {field}.'{sub}'"):
        validate_record(record)


@pytest.mark.parametrize('field,value,message', [
    ('w_bits', '8', "field 'w_bits' must be int"),
    ('w_bits', True, "field 'w_bits' must be int"),
    ('task', 'segmentation', "'task'='segmentation' is invalid: allowed values are"),
    ('schema_version', 99, 'schema_version=99 is not supported'),
    ('metrics', {'quant': {'coco/bbox_mAP': 'high'}}, "metrics.quant.'coco/bbox_mAP' must be a number"),
    ('git', {'commit': 5, 'dirty': False}, "field 'git.commit' must be str or null"),
])
def test_wrong_values_are_refused(field, value, message):
    record = fake_record()
    record[field] = value
    with pytest.raises(RecordError, match=message.replace('(', r'\(').replace('.', r'\.')):
        validate_record(record)


def test_to_jsonable_keeps_non_finite_numbers_and_converts_containers():
    out = to_jsonable({'a': (1, 2.5), 'b': math.inf, 3: None})
    assert out == {'a': [1, 2.5], 'b': math.inf, '3': None}
