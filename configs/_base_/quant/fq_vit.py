_base_ = './ptq.py'
# FQ-ViT: power-of-two factor on post-LayerNorm inputs, 4-bit log-int-softmax on the attention logits, min/max
# ranges elsewhere.
quant_method = dict(type='FQViT', w_bits=8, a_bits=8, softmax_bits=4)
