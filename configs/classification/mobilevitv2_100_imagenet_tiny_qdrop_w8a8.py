# MobileViTv2-1.0 on the bundled ImageNet sample; QDrop W8/A8.
_base_ = [
    '../_base_/models/mobilevitv2_100.py',
    '../_base_/datasets/imagenet_tiny.py',
    '../_base_/quant/qdrop_w8a8.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
