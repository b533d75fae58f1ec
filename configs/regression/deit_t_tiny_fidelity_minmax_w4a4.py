# The regression reference's default run: a headless DeiT-T with one block at 32x32 (random weights from the
# fixed seed) on the bundled ImageNet sample, its features' fidelity (SQNR, cosine, 1-NN) after MinMax W4/A4.
# Deterministic and about 8 s on 2 CPU cores; tools/regress.py checks it against benchmarks/regression/
# reference.yaml. Random weights: the numbers track the quantization code, not a model's accuracy.
_base_ = ['../classification/deit_t_imagenet_tiny_minmax_w8a8.py']
model = dict(num_classes=0, model_kwargs=dict(img_size=32, depth=1))
test_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='TimmEvalTransform', model_name=_base_.timm_model_name, input_size=32),
    dict(type='PackClsInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_evaluator = dict(_delete_=True, type='FeatureFidelity', feature_key='pred_feats')
quant_method = dict(w_bits=4, a_bits=4)
model_name = 'deit_t_tiny_headless'
log_level = 'WARNING'
