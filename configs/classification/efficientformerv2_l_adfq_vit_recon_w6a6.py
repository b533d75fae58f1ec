# EfficientFormerV2-L on ImageNet val; ADFQViT W6/A6.
_base_ = [
    '../_base_/models/efficientformerv2_l.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/adfq_vit_recon_w6a6.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
