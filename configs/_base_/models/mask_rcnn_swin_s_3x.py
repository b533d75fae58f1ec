# mmdet's own Mask R-CNN Swin-S 3x config (depths 2-2-18-2, trained with AMP), unmodified, plus the adapter.
_base_ = 'mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py'

# weights come from the checkpoint given to tools/quant_test.py, never from the ImageNet URL
model = dict(backbone=dict(init_cfg=None))

quant_adapter = dict(type='MMDetSwinAdapter', scope='backbone')
