# Swin-B (patch 4, window 7): timm `swin_base_patch4_window7_224`.
# The timm model as an mmengine model, its timm eval preprocessing, and its adapter.
# Weights: the CHECKPOINT argument of tools/quant_test.py (a timm .pth / .safetensors state dict), or
# `model.pretrained=True` to take them from timm's local cache (never downloaded at run time).
_base_ = '../default_runtime_cls.py'

timm_model_name = 'swin_base_patch4_window7_224'
model = dict(type='TimmClassifier', model_name=timm_model_name)
test_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='TimmEvalTransform', model_name=timm_model_name),
    dict(type='PackClsInputs'),
]
quant_adapter = dict(type='TimmSwinAdapter')
