# Feature fidelity of a headless ViT-S/14 (DINOv2 architecture) on labelled ImageNet val images: float vs
# quantized CLS features (SQNR, cosine similarity, 1-NN agreement; metric FeatureFidelity); MinMax W8/A8.
# benchmarks/fidelity_real_vit.py runs it with the weights / image paths given on its command line and keeps
# the calibration images out of the evaluated ones; tools/quant_test.py runs it as it is (all images):
#     python tools/quant_test.py configs/fidelity/vit_s14_dinov2_features_minmax_w8a8.py WEIGHTS.safetensors \
#         --cfg-options test_dataloader.dataset.data_root=IMAGES_ROOT quant_calibration.dataset.data_root=IMAGES_ROOT
# (IMAGES_ROOT holds images/ and labels.txt, e.g. ../shared/data/imagenet_val_subset/).
_base_ = [
    '../_base_/models/vit_s14_dinov2.py',
    '../_base_/quant/minmax.py',
]
fidelity_root = 'data/imagenet_val_subset/'
test_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ImageNetDataset', data_root=fidelity_root, ann_file='labels.txt',
                 data_prefix=dict(img_path='images'), num_classes=1000, pipeline=_base_.test_pipeline))
test_evaluator = dict(type='FeatureFidelity', feature_key='pred_feats')
quant_calibration = dict(
    dataset=dict(type='ImageNetDataset', data_root=fidelity_root, ann_file='labels.txt',
                 data_prefix=dict(img_path='images'), num_classes=1000),
    num_images=32,
    seed=0,
    protocol='seeded',
    batch_size=16)
quant_method = dict(w_bits=8, a_bits=8)
