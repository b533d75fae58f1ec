# EfficientFormer-L1 on the bundled ImageNet sample; QHyViT W8/A8.
_base_ = [
    '../_base_/models/efficientformer_l1.py',
    '../_base_/datasets/imagenet_tiny.py',
    '../_base_/quant/qhyvit_recon_w8a8.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
