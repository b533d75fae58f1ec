# Training (tools/train_default.py) of the small Swin Mask R-CNN from scratch on the shapes train split (schedule:
# ../_base_/schedules/shapes_cpu_train.py; no weight decay on position tables and norms).
_base_ = [
    '../_base_/models/mask_rcnn_swin_small_shapes.py',
    '../_base_/datasets/shapes_instance.py',
    '../_base_/schedules/shapes_cpu_train.py',
]
train_dataloader = _base_.shapes_train_dataloader
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = _base_.shapes_val_dataloader
test_evaluator = _base_.shapes_val_evaluator

max_iters = 3000
train_cfg = dict(_base_.shapes_train_cfg, max_iters=max_iters)
optim_wrapper = dict(_base_.shapes_optim_wrapper, optimizer=dict(type='AdamW', lr=6e-4, weight_decay=0.05),
                     paramwise_cfg=dict(custom_keys=dict(absolute_pos_embed=dict(decay_mult=0.0),
                                                         relative_position_bias_table=dict(decay_mult=0.0),
                                                         norm=dict(decay_mult=0.0))))
param_scheduler = [_base_.shapes_warmup, dict(_base_.shapes_step_decay, milestones=[int(max_iters * 0.8)])]
default_hooks = _base_.shapes_default_hooks
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)
