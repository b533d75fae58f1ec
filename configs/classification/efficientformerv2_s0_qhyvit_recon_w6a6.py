# EfficientFormerV2-S0 on ImageNet val; QHyViT W6/A6.
_base_ = [
    '../_base_/models/efficientformerv2_s0.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/qhyvit_recon_w6a6.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
