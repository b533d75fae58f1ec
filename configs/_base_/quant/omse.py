_base_ = './ptq.py'
# OMSE baseline: uniform asymmetric quantizers whose ranges (weights and activations) minimise the quantization
# MSE; per-tensor activations, per-channel weights.
quant_method = dict(type='OMSE', w_bits=8, a_bits=8, w_granularity='per_channel', a_granularity='per_tensor')
