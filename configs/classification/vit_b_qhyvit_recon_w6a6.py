# ViT-B/16 on ImageNet val; QHyViT W6/A6.
_base_ = [
    '../_base_/models/vit_b.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/qhyvit_recon_w6a6.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
