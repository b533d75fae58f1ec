# Mask R-CNN Swin-T 1x, Percentile W4/A4 over the whole detector (backbone, FPN, RPN and RoI heads: the RepQ-ViT
# detection scope), with the first layer (patch embedding) and the last layers (rpn_cls / rpn_reg, fc_cls / fc_reg,
# conv_logits) kept at W8/A8.
_base_ = './mask_rcnn_swin_t_1x_coco_percentile_w4a4.py'
quant_adapter = dict(scope='full')
quant_method = dict(overrides=[dict(tags=['first', 'last'], w_bits=8, a_bits=8)])
