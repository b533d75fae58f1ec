# MobileViT-XXS on ImageNet val; QDrop W6/A6.
_base_ = [
    '../_base_/models/mobilevit_xxs.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/qdrop_w6a6.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
