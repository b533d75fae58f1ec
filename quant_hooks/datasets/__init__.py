"""Datasets and transforms registered for configs (quant_hooks' DATASETS / TRANSFORMS)."""
from .imagenet import IMG_EXTENSIONS, DatasetError, ImageNetDataset, list_synset_folders, read_label_file
from .transforms import LoadImageRGB, PackClsInputs, TimmEvalTransform, resolve_timm_eval_config

__all__ = ['IMG_EXTENSIONS', 'DatasetError', 'ImageNetDataset', 'list_synset_folders', 'read_label_file',
           'LoadImageRGB', 'PackClsInputs', 'TimmEvalTransform', 'resolve_timm_eval_config']
