# mmdet's own Mask R-CNN Swin-T 3x config (multi-scale + crop training, 36 epochs), unmodified, plus the adapter.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

# weights come from the checkpoint given to tools/quant_test.py, never from the ImageNet URL
model = dict(backbone=dict(init_cfg=None))

quant_adapter = dict(type='MMDetSwinAdapter', scope='backbone')
