_base_ = './ptq.py'
# ADFQ-ViT (calibration part): per-patch outlier-aware quantizer on post-LayerNorm inputs (dynamic per token, any
# token count), shift-log2 on post-GELU inputs, log√2 attention probabilities, grid-searched q/k ranges.
quant_method = dict(type='ADFQViT', w_bits=8, a_bits=8, outlier_threshold=5.0, post_ln_granularity='per_token')
