# RepQ-ViT's detection calibration protocol, for reproducing its published numbers: the first image of the
# COCO val2017 split (the project's default is 32 seeded train2017 images, see coco_calibration.py).
quant_calibration = dict(
    dataset=dict(
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        backend_args=None),
    num_images=1,
    protocol='first')
