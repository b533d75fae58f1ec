_base_ = './ptq.py'
# QDrop baseline: uniform quantizers (MSE-searched ranges), then block-wise reconstruction with QDrop input
# mixing (probability 0.5), AdaRound weights and learned activation steps, 20k iterations per block (shorten with
# --cfg-options quant_method.reconstruction.iters=...). Use calibration batches of 32 images for the paper's batch.
quant_method = dict(type='QDrop', w_bits=4, a_bits=4, w_granularity='per_channel', a_granularity='per_tensor',
                    reconstruction=dict(unit='block', iters=20000, qdrop_prob=0.5, seed=1005))
