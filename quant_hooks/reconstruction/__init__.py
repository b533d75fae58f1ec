"""Learned reconstruction after calibration (AdaRound rounding and activation scales, unit by unit); pure torch."""
from .cache import RecordCache
from .capture import StopForward, capture_unit
from .engine import ReconstructionConfig, Reconstructor, reconstruct
from .losses import AttentionKL, LossTerm, Tap, build_loss_term, output_mse, register_loss_term
from .units import UNIT_LEVELS, ReconUnit, find_units

__all__ = ['RecordCache', 'StopForward', 'capture_unit', 'ReconstructionConfig', 'Reconstructor', 'reconstruct',
           'AttentionKL', 'LossTerm', 'Tap', 'build_loss_term', 'output_mse', 'register_loss_term', 'UNIT_LEVELS',
           'ReconUnit', 'find_units']
