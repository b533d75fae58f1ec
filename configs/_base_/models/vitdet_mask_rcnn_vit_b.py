# ViTDet-style Mask R-CNN with a plain ViT-B/16 backbone (Li et al., "Exploring Plain Vision Transformer Backbones
# for Object Detection", 2022): windowed attention (14x14 windows) in all blocks but 2, 5, 8 and 11, which attend
# globally; the ImageNet-resolution absolute position embedding resized to the input grid; a simple feature pyramid
# (strides 4-32 from the stride-16 map, plus a max-pooled stride-64 level) with LayerNorm in its convs; a 2-conv
# RPN, a 4conv1fc box head and a 4-conv mask head, both with LayerNorm. Departures from the paper: absolute
# position embedding only (no decomposed relative position bias), so the backbone's attention is timm's own.
# Built on mmdet's Mask R-CNN R50-FPN config (RPN / RoI settings, COCO data); test images resized to fit 1024x1024.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

__ln2d = dict(type='quant_hooks.LN2d', eps=1e-6)

model = dict(
    backbone=dict(
        _delete_=True,
        type='quant_hooks.ViTDetBackbone',
        img_size=224,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        init_cfg=None),
    neck=dict(
        _delete_=True,
        type='quant_hooks.SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=__ln2d),
        mask_head=dict(norm_cfg=__ln2d)))

test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=(1024, 1024), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

quant_adapter = dict(type='ViTDetAdapter', scope='backbone')
