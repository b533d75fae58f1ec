"""ImageNet-style classification data: synset folders or an image folder with a ``FILE LABEL`` list."""
from __future__ import annotations

import os
import os.path as osp

from mmengine.dataset import BaseDataset

from ..registry import DATASETS

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')


class DatasetError(ValueError):
    """A classification dataset is missing, empty, or labelled out of range."""


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def list_synset_folders(img_dir: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Synset folders sorted by name (label = index, like torchvision's ImageFolder) and their images.

    Returns:
        (synsets, [(image path, label), ...]) with images in sorted order inside each folder (recursive).
    """
    synsets = sorted(e.name for e in os.scandir(img_dir) if e.is_dir())
    samples = []
    for label, synset in enumerate(synsets):
        for root, dirs, files in os.walk(osp.join(img_dir, synset), followlinks=True):
            dirs.sort()
            samples += [(osp.join(root, f), label) for f in sorted(files) if _is_image(f)]
    return synsets, samples


def read_label_file(path: str, img_dir: str) -> list[tuple[str, int]]:
    """Parse ``FILE LABEL`` lines (blank lines and ``#`` comments skipped); FILE is relative to ``img_dir``."""
    samples = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise DatasetError(f'{path}:{lineno}: expected "FILE LABEL", got {line!r}')
            name, label = parts
            try:
                label = int(label)
            except ValueError:
                raise DatasetError(f'{path}:{lineno}: LABEL must be an integer class index, got {label!r}') from None
            samples.append((osp.join(img_dir, name), label))
    return samples


@DATASETS.register_module()
class ImageNetDataset(BaseDataset):
    """ImageNet classification images with 0-based labels, read from either layout:

    * synset folders: ``IMG_DIR/n01440764/*.JPEG ...``; the sorted folder names give the labels (the standard
      ILSVRC2012 order, the same as torchvision's ``ImageFolder``);
    * a list file ``ann_file`` of ``FILE LABEL`` lines, FILE relative to the image folder.

    Every entry is checked when the dataset is built: the images exist and every label is in
    ``[0, num_classes)``.

    Args:
        data_root: root folder; ``ann_file`` and ``data_prefix['img_path']`` are relative to it.
        ann_file: the ``FILE LABEL`` list; empty for synset folders.
        data_prefix: ``dict(img_path=...)``, the image folder.
        num_classes: number of classes of the label space (1000 for ImageNet-1k).
        pipeline: transforms, e.g. ``LoadImageRGB``, ``TimmEvalTransform``, ``PackClsInputs``.
        **kwargs: further :class:`mmengine.dataset.BaseDataset` arguments (``indices``, ``test_mode``...).
    """

    def __init__(self, data_root: str = '', ann_file: str = '', data_prefix: dict | None = None,
                 num_classes: int = 1000, pipeline=(), **kwargs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise DatasetError(f'num_classes={num_classes!r} is invalid: allowed values are integers >= 1')
        self.num_classes = num_classes
        self.synsets: list[str] = []
        metainfo = dict(kwargs.pop('metainfo', None) or {}, num_classes=num_classes)
        kwargs.setdefault('test_mode', True)
        super().__init__(ann_file=ann_file, metainfo=metainfo, data_root=data_root,
                         data_prefix=dict(data_prefix or dict(img_path='')), pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get('img_path') or self.data_root
        if not img_dir or not osp.isdir(img_dir):
            raise DatasetError(f'image folder not found: {img_dir!r} (data_root={self.data_root!r}, '
                               f'data_prefix={self.data_prefix!r})')
        if self.ann_file:
            if not osp.isfile(self.ann_file):
                raise DatasetError(f'ann_file not found: {self.ann_file!r} (expected "FILE LABEL" lines)')
            samples = read_label_file(self.ann_file, img_dir)
            where = f'ann_file {self.ann_file}'
        else:
            self.synsets, samples = list_synset_folders(img_dir)
            where = f'the {len(self.synsets)} synset folders of {img_dir}'
            if len(self.synsets) > self.num_classes:
                raise DatasetError(f'{img_dir} holds {len(self.synsets)} synset folders, more than '
                                   f'num_classes={self.num_classes}: labels would be out of range')
        if not samples:
            loose = [f for f in os.listdir(img_dir) if _is_image(f)]
            hint = (f'; {len(loose)} images lie directly in the folder: give ann_file with "FILE LABEL" lines'
                    if loose and not self.ann_file else '')
            raise DatasetError(f'no images found in {where} (extensions {IMG_EXTENSIONS}){hint}')
        bad = [(p, y) for p, y in samples if not 0 <= y < self.num_classes]
        if bad:
            raise DatasetError(f'{len(bad)} labels in {where} are out of range: allowed values are 0 .. '
                               f'{self.num_classes - 1} (num_classes={self.num_classes}); e.g. '
                               f'{[(osp.basename(p), y) for p, y in bad[:5]]}')
        # files found by listing the synset folders exist; a list file may name files that do not
        missing = [p for p, _ in samples if not osp.isfile(p)] if self.ann_file else []
        if missing:
            raise DatasetError(f'{len(missing)} images listed in {where} do not exist, e.g. {missing[:5]}')
        return [dict(img_path=p, gt_label=y) for p, y in samples]
