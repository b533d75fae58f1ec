from .qmodules import QuantAct, QuantConv2d, QuantLinear, QuantMatMul, QuantWeightLayer

__all__ = ['QuantAct', 'QuantConv2d', 'QuantLinear', 'QuantMatMul', 'QuantWeightLayer']
