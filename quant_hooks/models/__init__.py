"""Model components that configs build by name (registered in ``quant_hooks.registry.MODELS``)."""
from .simple_feature_pyramid import SimpleFeaturePyramid
from .vitdet_backbone import ViTDetBackbone

__all__ = ['SimpleFeaturePyramid', 'ViTDetBackbone']
