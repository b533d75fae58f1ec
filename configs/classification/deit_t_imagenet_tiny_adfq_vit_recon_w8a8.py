# DeiT-T/16 on the bundled ImageNet sample; ADFQViT W8/A8.
_base_ = [
    '../_base_/models/deit_t.py',
    '../_base_/datasets/imagenet_tiny.py',
    '../_base_/quant/adfq_vit_recon_w8a8.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
