# MobileViT-XXS on ImageNet val; OMSE W8/A8.
_base_ = [
    '../_base_/models/mobilevit_xxs.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/omse.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
quant_method = dict(w_bits=8, a_bits=8)
