"""The calibration set: N seeded images drawn from a dataset built by the config's registries."""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from .quantizers import EmptyCalibrationError

PROTOCOLS = ('seeded', 'first')


@dataclass
class CalibrationConfig:
    """How calibration images are chosen.

    Args:
        dataset: dataset config (built with the runner's default scope), with the test-time pipeline.
        num_images: how many images (>= 1).
        seed: seed of the random choice (``protocol='seeded'``).
        protocol: ``seeded`` draws ``num_images`` at random without replacement with ``seed``; ``first`` takes
            the first ``num_images`` in dataset order (RepQ-ViT's detection protocol with ``num_images=1`` on
            the val split).
        batch_size, num_workers: data loading.
    """

    dataset: dict = field(default_factory=dict)
    num_images: int = 32
    seed: int = 0
    protocol: str = 'seeded'
    batch_size: int = 1
    num_workers: int = 0

    def __post_init__(self):
        if not self.dataset:
            raise ValueError('calibration.dataset is missing: give the dataset config of the calibration split '
                             '(for example the train split with the test-time pipeline)')
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int) or self.num_images < 1:
            raise EmptyCalibrationError(f'calibration.num_images={self.num_images!r} is invalid: allowed values are '
                                        'integers >= 1')
        if self.protocol not in PROTOCOLS:
            raise ValueError(f'calibration.protocol={self.protocol!r} is invalid: allowed values are {PROTOCOLS}')
        if self.batch_size < 1:
            raise ValueError(f'calibration.batch_size={self.batch_size!r} is invalid: allowed values are >= 1')


def select_indices(dataset_len: int, cfg: CalibrationConfig) -> list[int]:
    if dataset_len == 0:
        raise EmptyCalibrationError('the calibration dataset holds no images: check calibration.dataset '
                                    '(ann_file, data_root, data_prefix)')
    if cfg.num_images > dataset_len:
        raise EmptyCalibrationError(f'calibration.num_images={cfg.num_images} exceeds the {dataset_len} images of '
                                    'the calibration dataset')
    if cfg.protocol == 'first':
        return list(range(cfg.num_images))
    g = torch.Generator().manual_seed(cfg.seed)
    return torch.randperm(dataset_len, generator=g)[:cfg.num_images].tolist()


def _unserialized(dataset_cfg: dict, registry) -> dict:
    """mmengine datasets pack their annotations into one array on init, which fails for an empty set before a
    clear message can be given; a few calibration images need no packing."""
    from mmengine.dataset import BaseDataset
    cls = dataset_cfg.get('type')
    if isinstance(cls, str):
        with registry.switch_scope_and_registry(dataset_cfg.get('_scope_')) as scoped:
            cls = scoped.get(cls)
    if isinstance(cls, type) and issubclass(cls, BaseDataset):
        return dict(dataset_cfg, serialize_data=False)
    return dataset_cfg


def _subset(dataset, indices: list[int]):
    """The chosen images of a dataset built for calibration alone.

    An mmengine dataset is cut down in place (``get_subset_``). Its copying ``get_subset`` deep-copies with a memo
    that is a mutable default argument (mmengine 0.10), shared by every call in the process and keyed by the
    address of each object copied: once an earlier dataset has been freed, an object of a later one created at
    the same address is "copied" as the earlier dataset's copy. In a process that calibrates several times (a
    suite, a table of recipes) a later calibration set then got a dataset for its pipeline ("'ImageNetDataset'
    object is not callable").
    """
    if hasattr(dataset, 'get_subset_'):
        dataset.get_subset_(indices)
        return dataset
    return torch.utils.data.Subset(dataset, indices)


def build_calibration_loader(cfg: CalibrationConfig | dict) -> tuple[DataLoader, dict]:
    """Build the loader over the chosen images (every rank sees all of them) and a record of the choice."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS

    if isinstance(cfg, dict):
        cfg = CalibrationConfig(**cfg)
    dataset = DATASETS.build(_unserialized(cfg.dataset, DATASETS))
    indices = select_indices(len(dataset), cfg)
    subset = _subset(dataset, indices)
    loader = DataLoader(subset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                        collate_fn=pseudo_collate)
    images = []
    for i in range(len(subset)):
        info = subset.get_data_info(i) if hasattr(subset, 'get_data_info') else {}
        images.append(osp.basename(str(info.get('img_path', info.get('img_id', indices[i])))))
    record = dict(dataset=dict(type=cfg.dataset.get('type'), ann_file=cfg.dataset.get('ann_file')),
                  num_images=cfg.num_images, seed=cfg.seed, protocol=cfg.protocol, batch_size=cfg.batch_size,
                  indices=indices, images=images)
    return loader, record
