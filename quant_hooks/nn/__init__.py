from .qmodules import QuantAct, QuantConv2d, QuantLinear, QuantMatMul, QuantSoftmax, QuantWeightLayer

__all__ = ['QuantAct', 'QuantConv2d', 'QuantLinear', 'QuantMatMul', 'QuantSoftmax', 'QuantWeightLayer']
