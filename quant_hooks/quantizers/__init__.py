"""Pure-torch fake quantizers (no mm* import in this package).

Find them by name: ``list_quantizers('log*')``; build them from configs: ``build_quantizer(dict(type='ppoq',
bits=4, threshold=5.0))``.
"""
from .adaround import AdaRoundQuantizer, beta_schedule
from .base import Quantizer, round_ste
from .calibrate import calibrate, run_calibration_passes
from .errors import EmptyCalibrationError, NonFiniteInputError, QuantizerError, check_bits
from .granularity import Granularity, PerChannel, PerHead, PerTensor, PerToken, parse_granularity
from .hybrid import HybridQuantizer, evaluate_candidates, resolve_zero_point_overflow, zero_point_overflow
from .layer_error import LayerFnError, LinearOutputError, OutputError
from .log import Log2Quantizer, LogQuantizer, LogSqrt2Quantizer
from .noisy import NoisyQuantizer, search_noise, weight_times_noise
from .outlier import OutlierAwareQuantizer
from .range_search import RangeSearch, TailQuantiles, check_max_samples
from .ptf import LogIntSoftmax, PowerOfTwoFactorQuantizer, int_exp
from .registry import build_quantizer, get_quantizer_class, list_quantizers, register_quantizer
from .shift_log import ShiftLog2Quantizer
from .twin import TwinGeluQuantizer, TwinSoftmaxQuantizer
from .uniform import UniformQuantizer

__all__ = [
    'Quantizer', 'round_ste', 'calibrate', 'run_calibration_passes', 'RangeSearch', 'TailQuantiles',
    'check_max_samples',
    'QuantizerError', 'EmptyCalibrationError', 'NonFiniteInputError', 'check_bits',
    'Granularity', 'PerTensor', 'PerChannel', 'PerHead', 'PerToken', 'parse_granularity', 'build_quantizer',
    'get_quantizer_class', 'list_quantizers', 'register_quantizer', 'UniformQuantizer', 'LogQuantizer',
    'Log2Quantizer', 'LogSqrt2Quantizer', 'OutlierAwareQuantizer', 'ShiftLog2Quantizer', 'TwinSoftmaxQuantizer',
    'TwinGeluQuantizer', 'PowerOfTwoFactorQuantizer', 'LogIntSoftmax', 'int_exp', 'NoisyQuantizer', 'search_noise',
    'OutputError', 'LayerFnError', 'LinearOutputError',
    'weight_times_noise', 'HybridQuantizer', 'evaluate_candidates', 'resolve_zero_point_overflow',
    'zero_point_overflow', 'AdaRoundQuantizer', 'beta_schedule'
]
