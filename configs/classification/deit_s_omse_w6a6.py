# DeiT-S/16 on ImageNet val; OMSE W6/A6.
_base_ = [
    '../_base_/models/deit_s.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/omse.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
quant_method = dict(w_bits=6, a_bits=6)
