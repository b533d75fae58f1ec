"""ViTDet's simple feature pyramid: strides 4..32 (plus max-pooled extra levels) from one stride-16 map."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d
from torch import nn

from ..registry import MODELS

SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Feature pyramid built from the last backbone map only (ViTDet, Li et al. 2022).

    Per scale factor: 4.0 = two stride-2 deconvolutions (with LayerNorm and GELU between), 2.0 = one deconvolution,
    1.0 = identity, 0.5 = 2x2 max pooling; then a 1x1 conv and a 3x3 conv to ``out_channels``, each without bias and
    followed by a channel LayerNorm. Levels beyond the scale factors (``num_outs``) max-pool the last level with
    stride 2 (the RPN's stride-64 level).

    Args:
        in_channels: channels of the backbone map.
        out_channels: channels of every output level.
        scale_factors: resampling of each level, a decreasing subset of ``(4.0, 2.0, 1.0, 0.5)``.
        num_outs: number of output levels (>= ``len(scale_factors)``).
        norm_eps: LayerNorm epsilon.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, in_channels: int = 768, out_channels: int = 256,
                 scale_factors: Sequence[float] = SCALE_FACTORS, num_outs: int = 5, norm_eps: float = 1e-6,
                 init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        scale_factors = tuple(float(s) for s in scale_factors)
        if not scale_factors or any(s not in SCALE_FACTORS for s in scale_factors) or \
                list(scale_factors) != sorted(set(scale_factors), reverse=True):
            raise ValueError(f'SimpleFeaturePyramid scale_factors={scale_factors} is invalid: allowed values are '
                             f'distinct, decreasing values from {SCALE_FACTORS}')
        if num_outs < len(scale_factors):
            raise ValueError(f'SimpleFeaturePyramid num_outs={num_outs} is invalid: allowed values are integers >= '
                             f'len(scale_factors)={len(scale_factors)}')
        if in_channels % 4:
            raise ValueError(f'SimpleFeaturePyramid in_channels={in_channels} is invalid: allowed values are '
                             'multiples of 4 (the 4x level halves the channels twice)')
        self.scale_factors = scale_factors
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for scale in scale_factors:
            stage, dim = self._resampler(scale, in_channels, norm_eps)
            self.stages.append(stage)
            self.lateral_convs.append(nn.Sequential(nn.Conv2d(dim, out_channels, 1, bias=False),
                                                    LayerNorm2d(out_channels, eps=norm_eps)))
            self.output_convs.append(nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                                   LayerNorm2d(out_channels, eps=norm_eps)))

    @staticmethod
    def _resampler(scale: float, dim: int, eps: float) -> tuple[nn.Module, int]:
        if scale == 4.0:
            return nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2, eps=eps),
                                 nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)), dim // 4
        if scale == 2.0:
            return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
        if scale == 1.0:
            return nn.Identity(), dim
        return nn.MaxPool2d(2, stride=2), dim

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Backbone outputs (the last one is used) -> ``num_outs`` contiguous maps, finest first.

        The channel LayerNorm returns a permuted (non-contiguous) view; mmcv's CPU ``RoIAlign`` reads its input as
        contiguous NCHW memory, so the maps are made contiguous here.
        """
        x = inputs[-1]
        outs = [out(lat(stage(x))).contiguous()
                for stage, lat, out in zip(self.stages, self.lateral_convs, self.output_convs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
