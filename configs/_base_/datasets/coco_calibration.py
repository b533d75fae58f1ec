# Calibration on COCO train2017 (mmdet's data layout under data/coco/): 32 seeded images. The pipeline is the
# test-time pipeline of the config (deterministic resize, no flip) unless a `pipeline` is given here.
quant_calibration = dict(
    dataset=dict(
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=False),
        test_mode=True,
        backend_args=None),
    num_images=32,
    seed=0,
    protocol='seeded')
