# The ViTDet-style Mask R-CNN with a ViT-Ti/16 backbone (192 wide, 12 blocks, 3 heads; global attention in blocks
# 2, 5, 8, 11): the small member of the family, for tests and demos on CPU.
_base_ = './vitdet_mask_rcnn_vit_b.py'

model = dict(
    backbone=dict(embed_dim=192, num_heads=3, drop_path_rate=0.0),
    neck=dict(in_channels=192))
