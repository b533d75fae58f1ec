"""An mmengine model around any timm classifier, so that mmengine's Runner (and PTQHook) can test it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from ..registry import MODELS
from .timm_weights import create_timm_model, disable_fused_attention, find_cached_pretrained, load_timm_weights

MODES = ('tensor', 'predict', 'loss')


def timm_mean_std(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean / std (in [0, 1] units) from the timm model's pretrained config."""
    from timm.data import resolve_data_config
    cfg = resolve_data_config({}, model=model)
    return tuple(cfg['mean']), tuple(cfg['std'])


@MODELS.register_module()
class TimmClassifier(BaseModel):
    """A timm model created by name, with weights from a local file or timm's local cache.

    Inputs are uint8 RGB images ``[3, H, W]`` already resized and cropped by the timm eval transform (see
    :class:`~quant_hooks.datasets.TimmEvalTransform`); the data preprocessor normalises them with the mean / std
    of the model's pretrained config (``ImgDataPreprocessor`` with ``mean·255``, ``std·255``).

    Args:
        model_name: timm model name, e.g. ``deit_small_patch16_224``.
        num_classes: classes of the head; ``0`` builds the model without head (``predict`` then returns the
            pooled features as ``pred_feats``); ``None`` keeps the timm default (1000 for ImageNet models).
        checkpoint: a local ``.pth`` / ``.safetensors`` state dict, loaded strictly (every key and shape).
        pretrained: load timm's pretrained weights from the local Hugging Face / torch hub cache; nothing is ever
            downloaded (a clear error says where the file was looked for). Exclusive with ``checkpoint``.
        model_kwargs: further arguments of the timm model (``img_size``, ``dynamic_img_size``, ``depth``...).
        fused_attn: keep timm's fused ``scaled_dot_product_attention``. The default ``False`` makes q@kᵀ, the
            softmax and attn@v separate operations, as the quantized attention computes them, so that the float
            reference differs from the quantized model by quantization alone, not by the attention kernel.
        data_preprocessor: an mmengine data preprocessor config; ``None`` builds ``ImgDataPreprocessor`` from the
            model's pretrained config.
        init_cfg: mmengine init config (unused by timm models).

    Attributes:
        model: the timm network.
        weights_source: the file the weights came from, or ``None`` for random weights.
    """

    def __init__(self, model_name: str, num_classes: int | None = None, checkpoint: str | None = None,
                 pretrained: bool = False, model_kwargs: dict | None = None, fused_attn: bool = False,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None):
        if checkpoint and pretrained:
            raise ValueError('checkpoint and pretrained=True are exclusive: give one source of weights')
        net = create_timm_model(model_name, num_classes, model_kwargs)
        if data_preprocessor is None:
            mean, std = timm_mean_std(net)
            data_preprocessor = dict(type='ImgDataPreprocessor', mean=[255.0 * m for m in mean],
                                     std=[255.0 * s for s in std])
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.model = net
        self.model_name = model_name
        self.num_classes = int(getattr(net, 'num_classes', 0))
        if not fused_attn:
            disable_fused_attention(net)
        self.weights_source = None
        if checkpoint:
            self.load_weights(checkpoint)
        elif pretrained:
            self.load_weights(find_cached_pretrained(model_name, dict(net.pretrained_cfg)))

    def load_weights(self, path: str) -> dict:
        """Load weights from a local file strictly (see :func:`load_timm_weights`); returns an empty meta."""
        load_timm_weights(self.model, path, self.model_name)
        self.weights_source = path
        return {}

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None, mode: str = 'tensor'):
        """``tensor``: logits (features without head); ``predict``: data samples with ``pred_score`` /
        ``pred_label`` (or ``pred_feats``) and the ground truth; ``loss``: ``dict(loss=cross_entropy)``."""
        if mode not in MODES:
            raise ValueError(f'mode={mode!r} is invalid: allowed values are {MODES}')
        out = self.model(inputs)
        if mode == 'tensor':
            return out
        if mode == 'loss':
            if self.num_classes == 0:
                raise ValueError('mode="loss" needs a classifier head: num_classes is 0')
            labels = torch.stack([_gt_label(ds) for ds in data_samples]).to(out.device)
            return dict(loss=F.cross_entropy(out, labels))
        return self._predictions(out, data_samples)

    def _predictions(self, out: torch.Tensor, data_samples: list | None) -> list[BaseDataElement]:
        results = []
        for i in range(out.shape[0]):
            ds = data_samples[i] if data_samples is not None else BaseDataElement()
            if self.num_classes == 0:
                ds.pred_feats = out[i].float()
            else:
                score = out[i].float().softmax(-1)
                ds.pred_score = score
                ds.pred_label = score.argmax(-1, keepdim=True)
            results.append(ds)
        return results


def _gt_label(data_sample) -> torch.Tensor:
    if 'gt_label' not in data_sample:
        raise ValueError('mode="loss" needs data samples with gt_label')
    return data_sample.gt_label.reshape(-1)[0].long()
