# mmdet's own Mask R-CNN Swin-T 1x config, unmodified, plus the adapter that finds its quantization sites.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

# weights come from the checkpoint given to tools/quant_test.py, never from the ImageNet URL
model = dict(backbone=dict(init_cfg=None))

quant_adapter = dict(type='MMDetSwinAdapter', scope='backbone')
