# Mask R-CNN Swin-S with the 1x schedule: mmdet ships no such config, so this is its Swin-T 1x config with the
# Swin-S backbone of mmdet's Swin-S 3x config (depths 2-2-18-2; heads, window and drop path as Swin-T).
_base_ = './mask_rcnn_swin_t_1x.py'

model = dict(backbone=dict(depths=[2, 2, 18, 2]))
