_base_ = './ptq.py'
# Q-HyViT W8/A8 with bridge block reconstruction: bridge groups jointly, other blocks one by one (20k steps per
# unit; shorten with --cfg-options quant_method.reconstruction.iters=...).
quant_method = dict(type='QHyViT', w_bits=8, a_bits=8, reconstruction=dict(unit='block', group_tag='bridge_'))
