_base_ = './ptq.py'
# PTQ4ViT base PTQ: twin uniform post-softmax and post-GELU quantizers, symmetric searched steps elsewhere.
quant_method = dict(type='PTQ4ViT', w_bits=8, a_bits=8)
