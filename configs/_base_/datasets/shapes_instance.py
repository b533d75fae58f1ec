# The synthetic shapes dataset (tools/make_shapes_dataset.py; 224x224 images, 5 classes, polygon masks):
# train split written on demand by tools/train_default.py (git-ignored), val (64 images) and calib (16 images)
# committed under data/shapes. mmdet's detector configs carry their own data settings, so a config that inherits this
# file applies it with `train_dataloader = _base_.shapes_train_dataloader` and so on (see configs/train/).
shapes_root = '{{ fileDirname }}/../../../data/shapes/'
shapes_classes = ('ellipse', 'rectangle', 'triangle', 'star', 'cross')
shapes_metainfo = dict(classes=shapes_classes)

shapes_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
shapes_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 224), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
shapes_train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=shapes_root,
        metainfo=shapes_metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=shapes_train_pipeline))
shapes_val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=shapes_root,
        metainfo=shapes_metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=shapes_test_pipeline))
shapes_val_evaluator = dict(type='CocoMetric', ann_file=shapes_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'], format_only=False)

quant_calibration = dict(
    dataset=dict(
        type='CocoDataset',
        data_root=shapes_root,
        metainfo=shapes_metainfo,
        ann_file='annotations/instances_calib.json',
        data_prefix=dict(img='calib/'),
        test_mode=True,
        backend_args=None),
    num_images=16,
    seed=0,
    protocol='seeded')
