_base_ = './ptq.py'
# OMSE baseline (EasyQuant-style): uniform asymmetric quantizers whose ranges minimise the quantization MSE over
# a grid of scaled min/max ranges; per-tensor activations, per-channel weights.
quant_method = dict(type='OMSE', w_bits=8, a_bits=8, w_granularity='per_channel', a_granularity='per_tensor')
