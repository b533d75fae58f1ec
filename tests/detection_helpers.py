"""Helpers shared by the detector tests: build a detector from a config, a real COCO batch, predictions."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
MODEL_BASES = REPO / 'configs' / '_base_' / 'models'


def load_model_cfg(name: str, test_cfg: bool = True) -> Config:
    """A model base config; with ``test_cfg`` the RPN keeps few proposals and the RoI head returns 5 boxes at
    any score, so random-weight detectors yield (cheap) non-empty predictions that exercise the mask head."""
    cfg = Config.fromfile(str(MODEL_BASES / f'{name}.py'))
    if test_cfg:
        cfg.merge_from_dict({'model.test_cfg.rpn.nms_pre': 200, 'model.test_cfg.rpn.max_per_img': 30,
                             'model.test_cfg.rcnn.score_thr': 0.0, 'model.test_cfg.rcnn.max_per_img': 5})
    return cfg


def build_detector(cfg: Config, seed: int = 0) -> torch.nn.Module:
    """The detector of ``cfg`` with seeded random weights, in eval mode."""
    import quant_hooks.registry  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    return MODELS.build(cfg.model).eval()


def coco_batch(cfg: Config, coco_tiny: Path, scale=(256, 256), num_images: int = 1) -> dict:
    """The first ``num_images`` images of data/coco_tiny/val through the config's test pipeline, resized to fit
    ``scale``, collated as a data batch."""
    from mmdet.datasets import CocoDataset
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    for t in pipeline:
        if t['type'] == 'Resize':
            t['scale'] = scale
    dataset = CocoDataset(data_root=str(coco_tiny), ann_file='annotations/instances_val.json',
                          data_prefix=dict(img='val/'), test_mode=True, pipeline=pipeline)
    return pseudo_collate([dataset[i] for i in range(num_images)])


@torch.no_grad()
def backbone_features(model, batch) -> tuple[torch.Tensor, ...]:
    inputs = model.data_preprocessor(copy.copy(batch), False)['inputs']
    return tuple(f.clone() for f in model.backbone(inputs))


@torch.no_grad()
def predictions(model, batch) -> dict[str, torch.Tensor]:
    """bboxes, scores, labels and masks of the first image."""
    inst = model.test_step(copy.copy(batch))[0].pred_instances
    return {k: inst[k].clone() for k in ('bboxes', 'scores', 'labels', 'masks')}
