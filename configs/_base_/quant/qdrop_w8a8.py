_base_ = './qdrop.py'
quant_method = dict(w_bits=8, a_bits=8)
