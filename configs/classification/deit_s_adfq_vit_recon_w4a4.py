# DeiT-S/16 on ImageNet val; ADFQViT W4/A4.
_base_ = [
    '../_base_/models/deit_s.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/adfq_vit_recon_w4a4.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
