_base_ = './adfq_vit.py'
# ADFQ-ViT full recipe: the calibration part and the attention-score enhanced module-wise optimization with the
# paper's schedule (attention and MLP modules separately, KL term on attention modules, 3000 steps per module;
# shorten with --cfg-options quant_method.reconstruction.iters=...).
quant_method = dict(reconstruction=dict(unit='module', iters=3000))
