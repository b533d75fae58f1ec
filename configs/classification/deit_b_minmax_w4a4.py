# DeiT-B/16 on ImageNet val; MinMax W4/A4.
_base_ = [
    '../_base_/models/deit_b.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/quant/minmax.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
quant_method = dict(w_bits=4, a_bits=4)
