"""tools/convert_swin_det_checkpoint.py on synthetic checkpoints in the official Swin detection layout.

The official layout is made here from a random mmdet 3.x Cascade Mask R-CNN Swin-T by the inverse mapping, written
from first principles: the original Swin code names (``layers.N.blocks.M.attn.qkv``, ``mlp.fc1``,
``patch_embed.proj``) and its patch-merging channel order (blocks of C channels for the 2x2 neighbours
x(0,0), x(1,0), x(0,1), x(1,1), i.e. block index = row offset + 2 * column offset), whose meaning is checked
against mmdet's own PatchMerging with a reference merge written here.
"""
from __future__ import annotations

import re

import pytest
import torch

from quant_hooks.utils.checkpoint import CheckpointError, load_checkpoint
from quant_hooks.utils.swin_det_checkpoint import convert_swin_det_state_dict
from tests.detection_helpers import MODEL_BASES, build_detector, load_model_cfg
from tools.convert_swin_det_checkpoint import convert_checkpoint, main

CONFIG = str(MODEL_BASES / 'cascade_mask_rcnn_swin_t_3x.py')


def official_merge_weight(w: torch.Tensor) -> torch.Tensor:
    """mmdet reduction weight (columns c * 4 + kh * 2 + kw, nn.Unfold order) -> original (block-major) columns."""
    out_ch, in_ch = w.shape
    c = in_ch // 4
    official = torch.empty_like(w)
    for kh in range(2):
        for kw in range(2):
            block = kh + 2 * kw
            official[:, block * c:(block + 1) * c] = w[:, kh * 2 + kw::4]
    return official


def official_merge_norm(p: torch.Tensor) -> torch.Tensor:
    return official_merge_weight(p[None])[0]


def to_official(state: dict) -> dict:
    """mmdet 3.x detector state dict -> the key names and layout of the official Swin detection checkpoints."""
    out = {}
    for key, value in state.items():
        if key.startswith('backbone.'):
            k = key[len('backbone.'):].replace('patch_embed.projection.', 'patch_embed.proj.')
            m = re.match(r'stages\.(\d+)\.(.*)$', k)
            if m:
                rest = m.group(2).replace('attn.w_msa.', 'attn.').replace('ffn.layers.0.0.', 'mlp.fc1.')
                k = f'layers.{m.group(1)}.{rest.replace("ffn.layers.1.", "mlp.fc2.")}'
            if k.endswith('downsample.reduction.weight'):
                value = official_merge_weight(value)
            elif '.downsample.norm.' in k:
                value = official_merge_norm(value)
            key = f'backbone.{k}'
        out[key] = value.clone()
    return out


@pytest.fixture(scope='module')
def source_model():
    return build_detector(load_model_cfg('cascade_mask_rcnn_swin_t_3x', test_cfg=False), seed=1)


@pytest.fixture(scope='module')
def official_state(source_model):
    state = to_official(source_model.state_dict())
    assert 'backbone.layers.2.blocks.5.mlp.fc2.weight' in state and 'backbone.patch_embed.proj.weight' in state
    assert not any('stages' in k or 'w_msa' in k or 'ffn' in k for k in state)
    return state


def _save(state, path, **extra):
    torch.save(dict(state_dict=state, meta=dict(epoch=36), **extra), path)
    return str(path)


def test_official_merge_layout_is_what_the_original_code_computes(source_model):
    """Reference patch merging of the original Swin code, with the official-layout weights, equals mmdet's."""
    merge = source_model.backbone.stages[0].downsample
    torch.manual_seed(0)
    B, H, W, C = 2, 6, 4, 96
    x = torch.randn(B, H * W, C)
    with torch.no_grad():
        want, out_size = merge(x, (H, W))
        g = x.view(B, H, W, C)
        cat = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
        cat = torch.nn.functional.layer_norm(cat.view(B, -1, 4 * C), (4 * C, ), official_merge_norm(merge.norm.weight),
                                             official_merge_norm(merge.norm.bias), merge.norm.eps)
        got = cat @ official_merge_weight(merge.reduction.weight).t()
    assert out_size == (3, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_relative_position_index_of_the_original_code_equals_mmdets(source_model):
    """The buffer passes by name only: the original formula (written here) gives mmdet's values."""
    ws = 7
    coords = [(i, j) for i in range(ws) for j in range(ws)]
    want = torch.tensor([[(a[0] - b[0] + ws - 1) * (2 * ws - 1) + (a[1] - b[1] + ws - 1) for b in coords]
                         for a in coords])
    got = source_model.backbone.stages[0].blocks[0].attn.w_msa.relative_position_index
    assert torch.equal(got, want)


def test_converted_checkpoint_loads_strictly_with_equal_tensors(source_model, official_state, tmp_path, capsys):
    src = _save(official_state, tmp_path / 'cascade_mask_rcnn_swin_tiny_patch4_window7.pth', optimizer={})
    dst = str(tmp_path / 'converted.pth')
    assert main([src, CONFIG, dst]) == 0
    assert 'every key and shape matches' in capsys.readouterr().out
    target = build_detector(load_model_cfg('cascade_mask_rcnn_swin_t_3x', test_cfg=False), seed=2)
    load_checkpoint(target, dst)  # strict: zero missing / unexpected keys, same shapes
    want = source_model.state_dict()
    got = target.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['partial'] is False and meta['renamed_keys'] > 0


def test_conversion_is_the_identity_on_mmdet3_checkpoints(source_model):
    state = source_model.state_dict()
    converted, renamed = convert_swin_det_state_dict(state)
    assert renamed == 0 and converted.keys() == state.keys()
    assert all(converted[k] is state[k] for k in state)


def test_mixed_layouts_are_refused(source_model, official_state):
    mixed = dict(official_state)
    mixed['backbone.stages.0.blocks.0.attn.w_msa.qkv.weight'] = source_model.state_dict()[
        'backbone.stages.0.blocks.0.attn.w_msa.qkv.weight']
    with pytest.raises(ValueError, match='convert to the same key'):
        convert_swin_det_state_dict(mixed)


def test_another_depth_fails_loudly_and_writes_nothing(official_state, tmp_path):
    """A Swin-S-depth checkpoint (18 blocks in stage 2) against the Swin-T config."""
    deeper = dict(official_state)
    per_block = sum(k.startswith('backbone.layers.2.blocks.5.') for k in official_state)
    for key, value in official_state.items():
        if key.startswith('backbone.layers.2.blocks.5.'):
            for block in range(6, 18):
                deeper[key.replace('blocks.5.', f'blocks.{block}.')] = value.clone()
    src = _save(deeper, tmp_path / 'swin_s.pth')
    dst = tmp_path / 'out.pth'
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint(src, CONFIG, str(dst))
    message = str(err.value)
    assert f'{12 * per_block} unexpected keys' in message
    assert 'backbone.stages.2.blocks.17.attn.w_msa.qkv.weight' in message
    assert not dst.exists()


def test_missing_and_misshaped_keys_fail_loudly_partial_only_on_request(official_state, tmp_path, capsys):
    broken = dict(official_state)
    del broken['backbone.layers.1.downsample.reduction.weight']
    del broken['roi_head.mask_head.2.conv_logits.bias']
    broken['roi_head.bbox_head.0.fc_reg.weight'] = torch.zeros(4, 1024)  # class-agnostic regression
    src = _save(broken, tmp_path / 'broken.pth')
    dst = tmp_path / 'out.pth'
    assert main([src, CONFIG, str(dst)]) == 1
    err = capsys.readouterr().err
    assert '2 missing keys' in err and 'backbone.stages.1.downsample.reduction.weight' in err
    assert 'roi_head.mask_head.2.conv_logits.bias' in err
    assert 'roi_head.bbox_head.0.fc_reg.weight: checkpoint (4, 1024) vs model (320, 1024)' in err
    assert not dst.exists()

    assert main([src, CONFIG, str(dst), '--allow-partial']) == 0
    assert 'PARTIAL' in capsys.readouterr().out
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['partial'] is True
    assert 'roi_head.bbox_head.0.fc_reg.weight' not in saved['state_dict']
    assert saved['meta']['dropped_keys'] == ['roi_head.bbox_head.0.fc_reg.weight']


def test_changed_fixed_buffer_is_reported(official_state, tmp_path):
    tampered = dict(official_state)
    key = 'backbone.layers.0.blocks.0.attn.relative_position_index'
    tampered[key] = tampered[key].flip(0)
    with pytest.raises(CheckpointError, match="fixed buffers whose values differ"):
        convert_checkpoint(_save(tampered, tmp_path / 't.pth'), CONFIG, str(tmp_path / 'out.pth'))


def test_unreadable_source_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='bad.pth .*corrupt'):
        convert_checkpoint(str(bad), CONFIG, str(tmp_path / 'out.pth'))
