# The CPU training schedule of the shapes detectors (tools/train_default.py): iteration-based loop, AdamW with
# gradient clipping, linear warm-up and one step decay (x0.1 at 80% of the iterations), seed 0; no validation while
# training (the tool evaluates the exported weights on the val split). mmdet's model configs carry schedule keys of
# their own, so the names here are prefixed and a training config (configs/train/) applies them for its length:
#     max_iters = 900
#     train_cfg = dict(_base_.shapes_train_cfg, max_iters=max_iters)
#     param_scheduler = [_base_.shapes_warmup, dict(_base_.shapes_step_decay, milestones=[int(max_iters * 0.8)])]
shapes_train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=300, val_interval=10**9)
shapes_optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                            optimizer=dict(type='AdamW', lr=4e-4, weight_decay=0.05),
                            clip_grad=dict(max_norm=10.0, norm_type=2))
shapes_warmup = dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30)
shapes_step_decay = dict(type='MultiStepLR', by_epoch=False, milestones=[240], gamma=0.1)
shapes_default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=40, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
