"""Model adapters: where the quantization sites of each model family are."""
from .base import KINDS, ModelAdapter, replace_module, run_batches, wrap_linear_or_conv
from .mmdet_detector import MMDetDetectorAdapter
from .mmdet_swin import MMDetSwinAdapter, QuantWindowMSA
from .vitdet import QuantTimmAttention, ViTDetAdapter

__all__ = ['KINDS', 'ModelAdapter', 'replace_module', 'run_batches', 'wrap_linear_or_conv', 'MMDetDetectorAdapter',
           'MMDetSwinAdapter', 'QuantWindowMSA', 'QuantTimmAttention', 'ViTDetAdapter']
