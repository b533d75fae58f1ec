"""The ViTDet-style backbone and simple feature pyramid, against plain references written here and timm's ViT."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from quant_hooks.models import SimpleFeaturePyramid, ViTDetBackbone
from quant_hooks.models.vitdet_backbone import WindowedBlock, window_partition, window_unpartition


def test_window_partition_matches_a_loop_and_round_trips():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 3)
    windows, (hp, wp) = window_partition(x, 3)
    assert (hp, wp) == (6, 9)
    padded = torch.zeros(2, 6, 9, 3)
    padded[:, :5, :7] = x
    expected = []
    for b in range(2):
        for i in range(0, 6, 3):
            for j in range(0, 9, 3):
                expected.append(padded[b, i:i + 3, j:j + 3].reshape(9, 3))
    assert torch.equal(windows, torch.stack(expected))
    assert torch.equal(window_unpartition(windows, 3, (hp, wp), (5, 7)), x)


def _pair_of_blocks(window_size):
    torch.manual_seed(0)
    windowed = WindowedBlock(window_size=window_size, dim=32, num_heads=2, qkv_bias=True).eval()
    global_ = WindowedBlock(window_size=0, dim=32, num_heads=2, qkv_bias=True).eval()
    global_.load_state_dict(windowed.state_dict())
    return windowed, global_


def test_one_window_covering_the_grid_is_global_attention():
    windowed, global_ = _pair_of_blocks(window_size=6)
    x = torch.randn(1, 6, 6, 32)
    torch.testing.assert_close(windowed(x), global_(x), rtol=1e-6, atol=1e-6)


def test_windowed_attention_stays_inside_its_window():
    windowed, global_ = _pair_of_blocks(window_size=4)
    x = torch.randn(1, 8, 8, 32)
    y = x.clone()
    y[0, 0, 0, :16] += 10.0  # a token of the top-left window (not a constant shift, which LayerNorm removes)
    with torch.no_grad():
        changed = (windowed(y) - windowed(x)).abs().amax(-1)[0] > 1e-5
        changed_global = (global_(y) - global_(x)).abs().amax(-1)[0] > 1e-5
    assert changed[:4, :4].all() and not changed[4:, :].any() and not changed[:, 4:].any()
    assert changed_global[4:, 4:].all()


def test_all_global_backbone_equals_timm_vit_blocks():
    """Windows off: the backbone is timm's ViT trunk (same weights, same names) without class token."""
    torch.manual_seed(0)
    vit = timm.create_model('vit_tiny_patch16_224', pretrained=False, class_token=False, global_pool='avg').eval()
    backbone = ViTDetBackbone(img_size=224, embed_dim=192, depth=12, num_heads=3, window_size=0,
                              global_attn_indexes=(), pretrain_use_cls_token=False).eval()
    state = {k: v for k, v in vit.state_dict().items() if k.startswith(('patch_embed.', 'pos_embed', 'blocks.'))}
    backbone.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = vit.blocks(vit._pos_embed(vit.patch_embed(x)))
        got = backbone(x)[0]
    torch.testing.assert_close(got.flatten(2).transpose(1, 2), want, rtol=1e-5, atol=1e-5)


def test_position_embedding_is_resized_bicubically_to_the_grid():
    torch.manual_seed(0)
    backbone = ViTDetBackbone(img_size=64, embed_dim=32, depth=2, num_heads=2, window_size=2, global_attn_indexes=(1, ))
    grid = backbone.pos_embed[:, 1:].reshape(1, 4, 4, 32)
    assert torch.equal(backbone.abs_pos_embed((4, 4)), grid)
    want = F.interpolate(grid.permute(0, 3, 1, 2), size=(6, 5), mode='bicubic', align_corners=False)
    assert torch.equal(backbone.abs_pos_embed((6, 5)), want.permute(0, 2, 3, 1))
    assert backbone(torch.randn(1, 3, 96, 80))[0].shape == (1, 32, 6, 5)


def test_window_sizes_and_global_blocks():
    backbone = ViTDetBackbone(embed_dim=32, depth=4, num_heads=2, window_size=14, global_attn_indexes=(1, 3))
    assert [b.window_size for b in backbone.blocks] == [14, 0, 14, 0]


@pytest.mark.parametrize('kwargs, field', [
    (dict(global_attn_indexes=(12, )), 'global_attn_indexes'),
    (dict(window_size=-1), 'window_size'),
    (dict(embed_dim=100, num_heads=12), 'embed_dim'),
    (dict(img_size=100), 'img_size'),
])
def test_backbone_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=f'{field}=.* is invalid: allowed values'):
        ViTDetBackbone(**kwargs)


def test_simple_feature_pyramid_strides_and_channels():
    torch.manual_seed(0)
    neck = SimpleFeaturePyramid(in_channels=32, out_channels=16, num_outs=5).eval()
    outs = neck((torch.randn(1, 32, 10, 8), ))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 40, 32), (1, 16, 20, 16), (1, 16, 10, 8), (1, 16, 5, 4),
                                              (1, 16, 3, 2)]
    # the extra level is a stride-2 subsampling of the last one
    assert torch.equal(outs[4], outs[3][:, :, ::2, ::2])
    # every conv output is channel-normalised (LayerNorm without affine change at init)
    torch.testing.assert_close(outs[2].mean(1), torch.zeros(1, 10, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize('kwargs, field', [
    (dict(scale_factors=(3.0, 1.0)), 'scale_factors'),
    (dict(scale_factors=(1.0, 2.0)), 'scale_factors'),
    (dict(num_outs=3), 'num_outs'),
    (dict(in_channels=30), 'in_channels'),
])
def test_neck_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=f'{field}=.* is invalid: allowed values'):
        SimpleFeaturePyramid(**kwargs)


def test_class_token_final_norm_layer_scale_backbone_equals_timm_dinov2_layout(tmp_path):
    """With the class token, layer scale and final norm (the DINOv2 layout), a pretrained timm state dict loads
    strictly and the output map equals timm's patch tokens (antialiased position-embedding resize)."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    vit = timm.create_model('vit_small_patch14_dinov2', pretrained=False, num_classes=0, img_size=70, embed_dim=32,
                            depth=2, num_heads=2, init_values=0.5, dynamic_img_size=True).eval()
    path = tmp_path / 'vit.safetensors'
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    backbone = ViTDetBackbone(img_size=70, patch_size=14, embed_dim=32, depth=2, num_heads=2, window_size=0,
                              global_attn_indexes=(), init_values=1e-5, use_cls_token=True, final_norm=True,
                              pos_embed_antialias=True, pretrained=str(path), frozen=True)
    assert backbone.weights_source == str(path)
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training  # frozen: stays in eval mode
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        out = backbone(x)[0]
        ref = vit.forward_features(x)[:, 1:].reshape(2, 3, 4, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_class_token_needs_global_attention():
    with pytest.raises(ValueError, match='use_cls_token'):
        ViTDetBackbone(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, window_size=4,
                       global_attn_indexes=(1,), use_cls_token=True)


def test_pyramid_maps_are_contiguous_for_mmcv_roi_align():
    """mmcv's CPU RoIAlign reads NCHW memory as contiguous: on the channel LayerNorm's permuted view it returns other
    values, so every pyramid level must be contiguous (and RoI features then equal a contiguous copy's)."""
    from mmcv.ops import RoIAlign
    torch.manual_seed(0)
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8, scale_factors=(2.0, 1.0, 0.5), num_outs=4).eval()
    with torch.no_grad():
        outs = neck((torch.randn(1, 16, 8, 8), ))
    assert all(o.is_contiguous() for o in outs)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 12.0]])
    op = RoIAlign(7, 1 / 2, 0)
    torch.testing.assert_close(op(outs[0], rois), op(outs[0].clone(memory_format=torch.contiguous_format), rois))
    permuted = outs[0].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not torch.allclose(op(permuted, rois), op(outs[0], rois))  # the failure this guards against
