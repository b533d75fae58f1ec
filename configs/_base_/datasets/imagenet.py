# ImageNet-1k: test on the 50k val images in synset folders (data/imagenet/val/n01440764/...), calibrate on 32
# seeded train images (data/imagenet/train/<synset>/...) in one batch. The pipeline comes from the model base
# (`test_pipeline`: timm's eval transform of that model); a leaf config sets
#     test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
# and the calibration set takes the same pipeline unless it names its own.
imagenet_root = 'data/imagenet/'

test_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ImageNetDataset', data_root=imagenet_root, data_prefix=dict(img_path='val'),
                 num_classes=1000))
test_evaluator = dict(type='TopKAccuracy', topk=(1, 5))

quant_calibration = dict(
    dataset=dict(type='ImageNetDataset', data_root=imagenet_root, data_prefix=dict(img_path='train'),
                 num_classes=1000),
    num_images=32,
    seed=0,
    protocol='seeded',
    batch_size=32)
