# Cascade Mask R-CNN Swin-S 3x, ported from the published Swin detection config
# (cascade_mask_rcnn_swin_small_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py): the Swin-T Cascade
# port with the Swin-S backbone (depths 2-2-18-2; heads 3-6-12-24, window 7 and drop path 0.2 as published).
_base_ = './cascade_mask_rcnn_swin_t_3x.py'

model = dict(backbone=dict(depths=[2, 2, 18, 2], drop_path_rate=0.2))
