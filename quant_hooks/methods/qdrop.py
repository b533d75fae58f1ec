"""QDrop (Wei et al., ICLR 2022): BRECQ-style block reconstruction with randomly dropped activation quantization."""
from __future__ import annotations

from ..registry import QUANT_METHODS
from .uniform import UniformPTQ


@QUANT_METHODS.register_module(name='QDrop')
class QDrop(UniformPTQ):
    """Uniform quantizers (weights per output channel, activations per tensor; ranges by MSE search, as the
    authors' code initialises them), then block-wise reconstruction: AdaRound rounding of the weights (Adam,
    lr 1e-3, regulariser weight 0.01, β annealed 20 → 2 after 20% warm-up) and LSQ-style learned activation
    steps (Adam, lr 4e-5, cosine to 0), 20k iterations per block (the paper; shorten with
    ``reconstruction=dict(iters=...)``), seed 1005.

    Where the paper drops quantization per activation element inside the block, this engine mixes at the unit
    input: each element of the block input comes from the quantized upstream model with probability
    ``qdrop_prob`` (0.5) and from the float model otherwise (the authors' code's ``prob`` mixing of
    ``cur_inp`` / ``cur_fp_inp``); the block's own quantizers are always on. One iteration uses one recorded
    calibration batch (set ``quant_calibration.batch_size=32`` for the paper's batch). Every setting goes into
    the results file, since published reruns differ widely.

    Args:
        **kwargs: see :class:`UniformPTQ`; ``reconstruction=dict(...)`` overrides the defaults above (see
            :class:`~quant_hooks.reconstruction.ReconstructionConfig`).
    """

    range_method = 'mse'
    reconstruction_defaults = dict(unit='block', iters=20000, w_lr=1e-3, a_lr=4e-5, a_lr_schedule='cosine',
                                   reg_weight=0.01, beta=(20.0, 2.0), warmup=0.2, qdrop_prob=0.5, seed=1005)
    reconstruct_by_default = True
