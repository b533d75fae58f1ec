# Mask R-CNN Swin-T (mmdet's 1x config) on the bundled COCO subset; backbone W8/A8, per-tensor MinMax.
_base_ = [
    '../_base_/models/mask_rcnn_swin_t_1x.py',
    '../_base_/datasets/coco_tiny_detection.py',
    '../_base_/quant/minmax.py',
]
test_dataloader = _base_.coco_tiny_test_dataloader
test_evaluator = _base_.coco_tiny_test_evaluator
quant_method = dict(w_bits=8, a_bits=8, w_granularity='per_tensor')
