_base_ = './ptq.py'
# NoisyQuant on top of PTQ4ViT (the paper's setting): seeded uniform noisy bias on the inputs of the linear layers,
# folded into their biases, noise range and mean searched per layer.
quant_method = dict(type='NoisyQuant', w_bits=8, a_bits=8, base=dict(type='PTQ4ViT'), seed=0, search=True)
