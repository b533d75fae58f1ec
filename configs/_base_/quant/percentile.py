_base_ = './ptq.py'
# Percentile baseline: uniform asymmetric quantizers whose ranges (weights and activations) are the best of several
# percentile clips; per-tensor activations, per-channel weights.
quant_method = dict(type='Percentile', w_bits=8, a_bits=8, w_granularity='per_channel', a_granularity='per_tensor')
