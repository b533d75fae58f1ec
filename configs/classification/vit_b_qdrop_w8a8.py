# ViT-B/16 on ImageNet val; QDrop W8/A8.
_base_ = [
    '../_base_/models/vit_b.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/qdrop_w8a8.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
