# A ViT-S/14 with the DINOv2 architecture (timm `vit_small_patch14_dinov2`) without classifier head: the model
# of the feature-fidelity benchmark (benchmarks/fidelity_real_vit.py). Its position embedding is for 518 px
# inputs; dynamic_img_size interpolates it for the 224 px eval transform used here.
_base_ = '../default_runtime_cls.py'

timm_model_name = 'vit_small_patch14_dinov2'
model = dict(type='TimmClassifier', model_name=timm_model_name, num_classes=0,
             model_kwargs=dict(dynamic_img_size=True))
test_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='TimmEvalTransform', model_name=timm_model_name, input_size=224),
    dict(type='PackClsInputs'),
]
quant_adapter = dict(type='TimmViTAdapter')
