"""Model components that configs build by name (registered in ``quant_hooks.registry.MODELS``): timm
classifiers, and the plain-ViT detection backbone with its simple feature pyramid."""
from .simple_feature_pyramid import SimpleFeaturePyramid
from .timm_classifier import TimmClassifier, timm_mean_std
from .timm_weights import create_timm_model, disable_fused_attention, find_cached_pretrained, load_timm_weights
from .vitdet_backbone import ViTDetBackbone

__all__ = ['SimpleFeaturePyramid', 'ViTDetBackbone', 'TimmClassifier', 'timm_mean_std', 'create_timm_model',
           'disable_fused_attention', 'find_cached_pretrained', 'load_timm_weights']
