_base_ = './ptq.py'
# RepQ-ViT: post-LayerNorm inputs calibrated channel-wise and reparameterized into the LayerNorm and the next layer
# (layer-wise quantizer left), log√2 attention probabilities, percentile ranges, per-channel weights. The authors'
# detection protocol adds quant_adapter.scope='full' and overrides=[dict(tags=['first', 'last'], w_bits=8, a_bits=8)].
quant_method = dict(type='RepQViT', w_bits=8, a_bits=8)
