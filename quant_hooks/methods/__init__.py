"""PTQ method recipes."""
from .base import PTQMethod, iter_quantizers, set_quant_enabled
from .qdrop import QDrop
from .uniform import MinMaxPTQ, OMSEPTQ, PercentilePTQ, UniformPTQ

__all__ = ['PTQMethod', 'iter_quantizers', 'set_quant_enabled', 'UniformPTQ', 'MinMaxPTQ', 'PercentilePTQ',
           'OMSEPTQ', 'QDrop']
