# The bundled COCO subset (data/coco_tiny): 20 test images and 8 disjoint calibration images.
# mmdet's detector configs carry their own COCO data settings, so a config that inherits this file applies it with
#     test_dataloader = _base_.coco_tiny_test_dataloader
#     test_evaluator = _base_.coco_tiny_test_evaluator
# (the keys merge into the detector's, keeping its test pipeline).
coco_tiny_root = '{{ fileDirname }}/../../../data/coco_tiny/'

coco_tiny_test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=coco_tiny_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True))
coco_tiny_test_evaluator = dict(type='CocoMetric', ann_file=coco_tiny_root + 'annotations/instances_val.json')

quant_calibration = dict(
    dataset=dict(
        type='CocoDataset',
        data_root=coco_tiny_root,
        ann_file='annotations/instances_calib.json',
        data_prefix=dict(img='calib/'),
        test_mode=True,
        backend_args=None),
    num_images=8,
    seed=0,
    protocol='seeded')
