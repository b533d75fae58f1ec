"""PTQ method recipes."""
from .adfq_vit import ADFQViT
from .base import PTQMethod, iter_quantizers, set_quant_enabled
from .fq_vit import FQViT
from .noisyquant import NoisyQuant
from .ptq4vit import PTQ4ViT
from .qdrop import QDrop
from .qhyvit import QHyViT
from .repq_vit import RepQViT
from .uniform import MinMaxPTQ, OMSEPTQ, PercentilePTQ, UniformPTQ

__all__ = ['PTQMethod', 'iter_quantizers', 'set_quant_enabled', 'UniformPTQ', 'MinMaxPTQ', 'PercentilePTQ',
           'OMSEPTQ', 'RepQViT', 'ADFQViT', 'NoisyQuant', 'QHyViT', 'PTQ4ViT', 'FQViT', 'QDrop']
