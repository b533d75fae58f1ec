"""A toy model, dataset, metric and adapter registered in quant_hooks' registries, to drive a real mmengine
Runner through the PTQ hook in a fraction of a second."""
from __future__ import annotations

import torch
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import nn

from quant_hooks.adapters import ModelAdapter, wrap_linear_or_conv
from quant_hooks.registry import DATASETS, METRICS, MODEL_ADAPTERS, MODELS
from quant_hooks.sites import QuantSite, Role


@MODELS.register_module(force=True)
class ToyRegressor(BaseModel):
    """y = fc2(gelu(fc1(layernorm(x))))."""

    def __init__(self, dim=8, hidden=16):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, inputs, data_samples=None, mode='tensor', **meta):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        y = self.fc2(self.act(self.fc1(self.norm(x)))).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((y - torch.stack(data_samples)) ** 2).mean())
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(y, data_samples)]
        return y


@DATASETS.register_module(force=True)
class ToyDataset(BaseDataset):
    """``length`` seeded samples (x, target) of dimension ``dim``; ``offset`` shifts the seed (another split)."""

    def __init__(self, length=8, dim=8, offset=0, **kwargs):
        self.length, self.dim, self.offset = length, dim, offset
        super().__init__(**kwargs)

    def load_data_list(self):
        g = torch.Generator().manual_seed(1234 + self.offset)
        return [dict(inputs=torch.randn(self.dim, generator=g) * 3, data_samples=torch.randn((), generator=g),
                     img_path=f'toy_{self.offset}_{i}.bin') for i in range(self.length)]


@METRICS.register_module(force=True)
class ToyMSE(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results += [float((s['pred'] - s['target']) ** 2) for s in data_samples]

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))


@MODEL_ADAPTERS.register_module(force=True)
class ToyAdapter(ModelAdapter):

    def _prepare(self, model):
        return [QuantSite('fc1', 'linear', wrap_linear_or_conv(model, 'fc1'), {'input': Role.POST_LN,
                                                                                'weight': Role.WEIGHT}),
                QuantSite('fc2', 'linear', wrap_linear_or_conv(model, 'fc2'), {'input': Role.POST_GELU,
                                                                                'weight': Role.WEIGHT})]

    def calibration_forward(self, model, data_batch):
        model(model.data_preprocessor(data_batch, False)['inputs'], mode='tensor')


def toy_config(work_dir, **quant):
    """A complete runner config for the toy model with the PTQ hook."""
    from mmengine.config import Config
    cfg = dict(
        default_scope='quant_hooks',
        work_dir=str(work_dir),
        model=dict(type='ToyRegressor'),
        test_dataloader=dict(batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                             dataset=dict(type='ToyDataset', length=8, pipeline=[])),
        test_evaluator=dict(type='ToyMSE'),
        test_cfg=dict(type='TestLoop'),
        custom_hooks=[dict(type='PTQHook')],
        quant_method=dict(type='MinMax', w_bits=8, a_bits=8),
        quant_adapter=dict(type='ToyAdapter'),
        quant_calibration=dict(dataset=dict(type='ToyDataset', length=16, offset=1, pipeline=[]), num_images=4,
                               seed=0),
        log_level='WARNING',
        randomness=dict(seed=0),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
    )
    cfg.update(quant)
    return Config(cfg)
