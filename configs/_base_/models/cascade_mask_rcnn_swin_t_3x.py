# Cascade Mask R-CNN Swin-T 3x, ported from the published Swin detection config
# (SwinTransformer/Swin-Transformer-Object-Detection, mmdet 2.x:
# cascade_mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py) to mmdet 3.x, so that
# its released checkpoint (cascade_mask_rcnn_swin_tiny_patch4_window7.pth, converted by
# tools/convert_swin_det_checkpoint.py) loads strictly. mmdet 3.x ships no Swin Cascade config.
#
# From mmdet's Cascade Mask R-CNN: FPN, RPN, 3 cascade stages (IoU 0.5 / 0.6 / 0.7), RoIAlign, FCN mask heads.
# From the published config: the Swin-T backbone; per stage a ConvFCBBoxHead with 4 shared 3x3 convs + 1 fc
# (BN after each conv), class-specific regression (reg_class_agnostic=False), GIoU loss on decoded boxes
# (reg_decoded_bbox=True, weight 10), target stds 0.1 / 0.05 / 0.033 (xy) and 0.2 / 0.1 / 0.067 (wh); AdamW
# lr 1e-4, wd 0.05, 36 epochs with steps at 27 and 33, multi-scale 480-800 + crop augmentation.
# The published training used SyncBN in the bbox heads; BN has the same parameters and the same test-time
# computation (running statistics), and runs in a single process on CPU.
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'

__norm_cfg = dict(type='BN', requires_grad=True)
__bbox_head = dict(
    type='ConvFCBBoxHead',
    num_shared_convs=4,
    num_shared_fcs=1,
    in_channels=256,
    conv_out_channels=256,
    fc_out_channels=1024,
    roi_feat_size=7,
    num_classes=80,
    reg_class_agnostic=False,
    reg_decoded_bbox=True,
    norm_cfg=__norm_cfg,
    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    loss_bbox=dict(type='GIoULoss', loss_weight=10.0))

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        convert_weights=True,
        # weights come from the checkpoint given to tools/quant_test.py, never from the ImageNet URL
        init_cfg=None),
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(bbox_head=[
        dict(__bbox_head, bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                          target_stds=[0.1, 0.1, 0.2, 0.2])),
        dict(__bbox_head, bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                          target_stds=[0.05, 0.05, 0.1, 0.1])),
        dict(__bbox_head, bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                          target_stds=[0.033, 0.033, 0.067, 0.067])),
    ]))

# training recipe of the published 3x config (multi-scale 480-800 with the DETR-style crop branch)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=[(s, 1333) for s in range(480, 801, 32)], keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)], keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=[(s, 1333) for s in range(480, 801, 32)], keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }),
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))

quant_adapter = dict(type='MMDetSwinAdapter', scope='backbone')
