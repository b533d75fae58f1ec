"""Shared logic of adapters for MMDetection detectors: the scope switch and the calibration forward."""
from __future__ import annotations

import torch
from torch import nn

from ..sites import QuantSite
from .base import KINDS, ModelAdapter

SCOPES = ('backbone', 'full')
#: the prediction layers of mmdet's RPN / RoI heads: tagged ``last`` in the full scope, so a method's
#: ``overrides=[dict(tags=['last'], w_bits=8, a_bits=8)]`` keeps them at higher precision
LAST_LAYER_NAMES = ('rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg', 'conv_logits')


class MMDetDetectorAdapter(ModelAdapter):
    """Base of detector adapters; subclasses list the backbone's sites in ``backbone_sites``.

    Args:
        scope: ``backbone`` (default) quantizes the backbone only; ``full`` also wraps every Linear / Conv2d of
            the neck, RPN and RoI heads as generic sites tagged ``head`` (the RepQ-ViT detection protocol), the
            prediction layers (:data:`LAST_LAYER_NAMES`) also tagged ``last``. Transposed convolutions (the mask
            head's upsampling) stay in floating point.
        kinds: site kinds to wrap.
    """

    def __init__(self, scope: str = 'backbone', kinds=KINDS):
        super().__init__(kinds)
        if scope not in SCOPES:
            raise ValueError(f'adapter scope={scope!r} is invalid: allowed values are {SCOPES}')
        self.scope = scope

    def backbone_sites(self, model: nn.Module) -> list[QuantSite]:
        raise NotImplementedError

    def _prepare(self, model):
        if not hasattr(model, 'backbone') or not hasattr(model, 'data_preprocessor'):
            raise TypeError(f'{type(self).__name__} expects an mmdet detector with .backbone and .data_preprocessor, '
                            f'got {type(model).__name__}')
        sites = self.backbone_sites(model)
        if self.scope == 'full':
            for site in self.generic_sites(model, '', skip=('backbone', ), tags={'head'}):
                if site.name.rpartition('.')[2] in LAST_LAYER_NAMES:
                    site.tags = site.tags | {'last'}
                sites.append(site)
        return sites

    @torch.no_grad()
    def calibration_forward(self, model, data_batch):
        if self.scope == 'backbone':
            inputs = model.data_preprocessor(data_batch, False)['inputs']
            model.backbone(inputs)
        else:
            model.test_step(data_batch)
