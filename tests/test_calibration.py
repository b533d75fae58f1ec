"""Choice of calibration images."""
from __future__ import annotations

import pytest

from quant_hooks.calibration import CalibrationConfig, select_indices
from quant_hooks.quantizers import EmptyCalibrationError

DATASET = dict(type='ToyDataset')


def test_seeded_choice_is_reproducible_and_seed_dependent():
    cfg = CalibrationConfig(dataset=DATASET, num_images=5, seed=3)
    a, b = select_indices(100, cfg), select_indices(100, cfg)
    assert a == b and len(set(a)) == 5 and all(0 <= i < 100 for i in a)
    assert select_indices(100, CalibrationConfig(dataset=DATASET, num_images=5, seed=4)) != a


def test_first_protocol_takes_dataset_order():
    assert select_indices(10, CalibrationConfig(dataset=DATASET, num_images=1, protocol='first')) == [0]


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(num_images=0), EmptyCalibrationError, 'num_images=0 is invalid'),
    (dict(num_images=-2), EmptyCalibrationError, 'num_images=-2 is invalid'),
    (dict(protocol='last'), ValueError, "protocol='last' is invalid: allowed values are"),
    (dict(batch_size=0), ValueError, 'batch_size=0 is invalid'),
])
def test_invalid_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        CalibrationConfig(dataset=DATASET, **kwargs)


def test_missing_dataset_and_too_few_images():
    with pytest.raises(ValueError, match='calibration.dataset is missing'):
        CalibrationConfig()
    with pytest.raises(EmptyCalibrationError, match='exceeds the 3 images'):
        select_indices(3, CalibrationConfig(dataset=DATASET, num_images=4))
    with pytest.raises(EmptyCalibrationError, match='holds no images'):
        select_indices(0, CalibrationConfig(dataset=DATASET, num_images=1))


def test_many_calibration_sets_in_one_process_each_get_their_own_pipeline():
    """mmengine's copying ``get_subset`` deep-copies with a memo shared by every call in the process (a mutable
    default argument) and keyed by object address: an object of a later dataset created where an earlier, freed
    dataset lived came back as that dataset's copy, e.g. as the pipeline ("'ToyDataset' object is not callable").
    The calibration set is cut down in place instead; many builds in a row all load their images."""
    import gc

    from mmengine.dataset import BaseDataset
    from mmengine.registry import DefaultScope

    import toy_components  # noqa: F401  (registers ToyDataset)
    from quant_hooks.calibration import build_calibration_loader
    memo = BaseDataset._copy_without_annotation.__defaults__[0]
    before = len(memo)
    cfg = dict(dataset=dict(type='ToyDataset', length=16, pipeline=[]), num_images=3, seed=1)
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        for i in range(60):
            loader, record = build_calibration_loader(cfg)
            sample = loader.dataset[0]
            assert isinstance(sample, dict) and len(loader.dataset) == 3, i
            assert record['indices'] == select_indices(16, CalibrationConfig(**cfg))
            del loader, sample
            if i % 5 == 0:
                gc.collect()
    assert len(memo) == before
