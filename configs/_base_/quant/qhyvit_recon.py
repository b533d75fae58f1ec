_base_ = './qhyvit.py'
# Q-HyViT with bridge block reconstruction: bridge groups jointly, other blocks one by one (20k steps per unit;
# shorten with --cfg-options quant_method.reconstruction.iters=...).
quant_method = dict(reconstruction=dict(unit='block', group_tag='bridge_'))
