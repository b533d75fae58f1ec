"""mmengine models wrapping timm networks."""
from .timm_classifier import TimmClassifier, timm_mean_std
from .timm_weights import (create_timm_model, disable_fused_attention, find_cached_pretrained, load_timm_weights)

__all__ = ['TimmClassifier', 'timm_mean_std', 'create_timm_model', 'disable_fused_attention',
           'find_cached_pretrained', 'load_timm_weights']
