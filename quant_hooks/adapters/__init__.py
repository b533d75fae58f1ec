"""Model adapters: where the quantization sites of each model family are."""
from .base import KINDS, ModelAdapter, replace_module, run_batches, wrap_linear_or_conv
from .mmdet_detector import MMDetDetectorAdapter
from .mmdet_swin import MMDetSwinAdapter, QuantWindowMSA
from .timm_common import QuantTimmAttention, SiteCollector, TimmAdapter, unwrap_timm
from .timm_hybrid import TimmHybridAdapter, Unit, find_bridges
from .timm_swin import QuantTimmWindowAttention, TimmSwinAdapter
from .timm_vit import TimmViTAdapter
from .vitdet import ViTDetAdapter

__all__ = ['KINDS', 'ModelAdapter', 'replace_module', 'run_batches', 'wrap_linear_or_conv', 'MMDetDetectorAdapter',
           'MMDetSwinAdapter', 'QuantWindowMSA', 'QuantTimmAttention', 'SiteCollector', 'TimmAdapter', 'unwrap_timm',
           'TimmHybridAdapter', 'Unit', 'find_bridges', 'QuantTimmWindowAttention', 'TimmSwinAdapter',
           'TimmViTAdapter', 'ViTDetAdapter']
