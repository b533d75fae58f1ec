# The bundled ImageNet sample (data/imagenet_tiny): 12 test images and 4 disjoint calibration images, `FILE LABEL`
# lists. Leaf configs link the model's pipeline as with imagenet.py.
imagenet_tiny_root = '{{ fileDirname }}/../../../data/imagenet_tiny/'

test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ImageNetDataset', data_root=imagenet_tiny_root, ann_file='val.txt',
                 data_prefix=dict(img_path='val'), num_classes=1000))
test_evaluator = dict(type='TopKAccuracy', topk=(1, 5))

quant_calibration = dict(
    dataset=dict(type='ImageNetDataset', data_root=imagenet_tiny_root, ann_file='calib.txt',
                 data_prefix=dict(img_path='calib'), num_classes=1000),
    num_images=4,
    seed=0,
    protocol='seeded',
    batch_size=4)
