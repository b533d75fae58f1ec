"""Pure-torch fake quantizers (no mm* import in this package)."""
from .base import Quantizer, round_ste
from .errors import EmptyCalibrationError, NonFiniteInputError, QuantizerError, check_bits
from .granularity import Granularity, PerChannel, PerHead, PerTensor, PerToken, parse_granularity
from .registry import build_quantizer, get_quantizer_class, list_quantizers, register_quantizer
from .uniform import UniformQuantizer

__all__ = [
    'Quantizer', 'round_ste', 'QuantizerError', 'EmptyCalibrationError', 'NonFiniteInputError', 'check_bits',
    'Granularity', 'PerTensor', 'PerChannel', 'PerHead', 'PerToken', 'parse_granularity', 'build_quantizer',
    'get_quantizer_class', 'list_quantizers', 'register_quantizer', 'UniformQuantizer'
]
