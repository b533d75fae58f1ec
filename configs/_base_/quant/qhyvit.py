_base_ = './ptq.py'
# Q-HyViT: per-layer choice of layer-wise vs channel-wise scales and symmetric vs asymmetric codes, zero-point
# overflow clamped; bridge blocks of hybrids recorded.
quant_method = dict(type='QHyViT', w_bits=8, a_bits=8, overflow='clamp_range')
