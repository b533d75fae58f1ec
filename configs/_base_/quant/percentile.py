_base_ = './ptq.py'
# Percentile baseline: uniform asymmetric quantizers, activation ranges from the best of the 0.999 / 0.9999 /
# 0.99999 percentiles (RepQ-ViT / ADFQ-ViT code), per-tensor activations, per-channel min/max weights.
quant_method = dict(type='Percentile', w_bits=8, a_bits=8, w_granularity='per_channel', a_granularity='per_tensor',
                    w_range_method='minmax')
