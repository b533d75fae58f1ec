# EfficientFormerV2-L on the bundled ImageNet sample; QDrop W8/A8.
_base_ = [
    '../_base_/models/efficientformerv2_l.py',
    '../_base_/datasets/imagenet_tiny.py',
    '../_base_/quant/qdrop_w8a8.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
