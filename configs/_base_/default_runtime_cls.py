# Runtime settings of the classification configs (timm models run by mmengine's Runner in the quant_hooks scope).
default_scope = 'quant_hooks'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
randomness = dict(seed=0)
test_cfg = dict(type='TestLoop')
