_base_ = './qdrop.py'
quant_method = dict(w_bits=6, a_bits=6)
