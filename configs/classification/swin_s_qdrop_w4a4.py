# Swin-S on ImageNet val; QDrop W4/A4.
_base_ = [
    '../_base_/models/swin_s.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/qdrop_w4a4.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
