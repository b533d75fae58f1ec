"""Data transforms for timm classifiers: load an RGB image, apply timm's eval transform, pack the sample."""
from __future__ import annotations

import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement

from ..registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageRGB(BaseTransform):
    """Open ``results['img_path']`` as an RGB PIL image in ``results['img']`` (``ori_shape`` = (H, W))."""

    def transform(self, results: dict) -> dict:
        from PIL import Image, UnidentifiedImageError
        path = results['img_path']
        try:
            with Image.open(path) as im:
                img = im.convert('RGB')
        except (OSError, UnidentifiedImageError) as e:
            raise OSError(f'cannot read image {path}: {e}') from e
        results['img'] = img
        results['ori_shape'] = (img.height, img.width)
        return results


def resolve_timm_eval_config(model_name: str | None = None, input_size=None, crop_pct: float | None = None,
                             interpolation: str | None = None, crop_mode: str | None = None) -> dict:
    """timm's eval data config of a model (its pretrained config), with the given entries overridden.

    ``input_size`` may be an int (square), ``(H, W)`` or ``(3, H, W)``.
    """
    from timm.data import resolve_data_config
    pretrained_cfg = {}
    if model_name is not None:
        import timm
        if not timm.is_model(model_name):
            raise ValueError(f'model_name={model_name!r} is not a timm model: allowed values are the names of '
                             'timm.list_models()')
        pretrained_cfg = timm.get_pretrained_cfg(model_name).to_dict()
    args = {}
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f'input_size={input_size!r} is invalid: allowed values are a positive int, (H, W) '
                             'or (3, H, W)')
        args['input_size'] = (3, *size)
    if crop_pct is not None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f'crop_pct={crop_pct!r} is invalid: allowed values are in (0, 1]')
        args['crop_pct'] = crop_pct
    if interpolation is not None:
        args['interpolation'] = interpolation
    if crop_mode is not None:
        args['crop_mode'] = crop_mode
    return resolve_data_config(args, pretrained_cfg=pretrained_cfg)


@TRANSFORMS.register_module()
class TimmEvalTransform(BaseTransform):
    """timm's evaluation transform for a model: resize the short side to ``size / crop_pct`` and center-crop
    ``input_size`` (interpolation, crop_pct, crop_mode and size from the model's pretrained config unless
    given), giving a uint8 ``[3, H, W]`` tensor in ``results['img']``. Normalisation is left to the model's data
    preprocessor, as timm does with its prefetcher.

    Args:
        model_name: the timm model whose pretrained config sets the defaults.
        input_size, crop_pct, interpolation, crop_mode: overrides of that config.
    """

    def __init__(self, model_name: str | None = None, input_size=None, crop_pct: float | None = None,
                 interpolation: str | None = None, crop_mode: str | None = None):
        from timm.data import create_transform
        self.data_config = resolve_timm_eval_config(model_name, input_size, crop_pct, interpolation, crop_mode)
        cfg = {k: self.data_config[k] for k in ('input_size', 'interpolation', 'crop_pct', 'crop_mode')}
        self.tf = create_transform(**cfg, is_training=False, use_prefetcher=True)

    def transform(self, results: dict) -> dict:
        img = results['img']
        out = self.tf(img)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(out)
        results['img'] = out
        results['img_shape'] = tuple(out.shape[-2:])
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.data_config})'


@TRANSFORMS.register_module()
class PackClsInputs(BaseTransform):
    """``dict(inputs=img, data_samples=BaseDataElement(gt_label, metainfo))`` for :class:`TimmClassifier`.

    Args:
        meta_keys: result keys copied into the data sample's metainfo.
    """

    def __init__(self, meta_keys=('img_path', 'sample_idx', 'ori_shape', 'img_shape')):
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if not isinstance(img, torch.Tensor):
            raise TypeError(f'PackClsInputs expects a tensor image (run TimmEvalTransform first), got '
                            f'{type(img).__name__}')
        sample = BaseDataElement(metainfo={k: results[k] for k in self.meta_keys if k in results})
        if 'gt_label' in results:
            sample.gt_label = torch.as_tensor([int(results['gt_label'])], dtype=torch.long)
        return dict(inputs=img, data_samples=sample)
