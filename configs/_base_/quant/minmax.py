_base_ = './ptq.py'
# MinMax baseline: uniform asymmetric quantizers with min/max ranges, per-tensor activations.
quant_method = dict(type='MinMax', w_bits=8, a_bits=8, w_granularity='per_channel', a_granularity='per_tensor')
