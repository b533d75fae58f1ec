_base_ = './ptq.py'
# ADFQ-ViT full recipe W4/A4: calibration (PPOQ post-LN, shift-log2 post-GELU, log-sqrt2 softmax) and the
# attention-score enhanced module-wise optimization with the paper's schedule (3000 steps per module; shorten with
# --cfg-options quant_method.reconstruction.iters=...).
quant_method = dict(type='ADFQViT', w_bits=4, a_bits=4, reconstruction=dict(unit='module', iters=3000))
