_base_ = './qdrop.py'
quant_method = dict(w_bits=4, a_bits=4)
