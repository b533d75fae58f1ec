# A small Swin Mask R-CNN trained from scratch on the 224x224 shapes dataset (5 classes): mmdet's SwinTransformer
# with reduced widths and depths (48/96/192/384 channels, 2 blocks per stage, 3/6/12/24 heads, 7x7 windows), a
# 128-channel FPN, 2-fc box head and 2-conv mask head; anchors scaled to the dataset's 18-110 px objects.
_base_ = './mask_rcnn_swin_t_1x.py'

model = dict(
    backbone=dict(embed_dims=48, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.1,
                  init_cfg=None),
    neck=dict(in_channels=[48, 96, 192, 384], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128, finest_scale=28),
        mask_roi_extractor=dict(out_channels=128, finest_scale=28),
        bbox_head=dict(in_channels=128, fc_out_channels=512, num_classes=5),
        mask_head=dict(num_convs=2, in_channels=128, conv_out_channels=128, num_classes=5)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(max_per_img=50)))
