"""The detection configs: generated leaves up to date, every (model, method) pair parses into a quantized test run,
and the ported Cascade Mask R-CNN configs hold the published architecture."""
from __future__ import annotations

import re

import pytest
from mmengine.config import Config

from tests.detection_helpers import MODEL_BASES, REPO
from tools import make_detection_configs as gen

DETECTION = REPO / 'configs' / 'detection'


def test_generated_configs_are_up_to_date():
    assert gen.check() == [], 'run python tools/make_detection_configs.py'
    expected = ((len(gen.DETECTORS) + len(gen.SHAPES)) * len(gen.BITS) + len(gen.TINY)) * len(gen.METHODS) \
        - len(gen.HAND_WRITTEN)
    assert len(gen.expected_configs()) == expected


def test_generator_flags_stale_and_edited_files(tmp_path):
    gen.write(tmp_path)
    assert gen.check(tmp_path) == []
    name = sorted(gen.expected_configs())[0]
    (tmp_path / name).write_text(gen.HEADER + '# edited\n')
    (tmp_path / 'old_coco_minmax_w2a2.py').write_text(gen.HEADER)
    (tmp_path / 'hand_written.py').write_text('_base_ = []\n')
    problems = gen.check(tmp_path)
    assert problems == [f'differs from the generator: {tmp_path / name}',
                        f'stale (no longer generated): {tmp_path / "old_coco_minmax_w2a2.py"}']
    assert gen.write(tmp_path)[1] == ['old_coco_minmax_w2a2.py']
    assert (tmp_path / 'hand_written.py').exists() and gen.check(tmp_path) == []


def _one_per_model_and_method():
    """The W4A4 leaf of every (model, method) pair (the bit widths differ only in the checked generated line), the
    coco_tiny leaves and the hand-written configs."""
    generated = gen.expected_configs()
    names = [n for n in generated if n.endswith('_w4a4.py') or '_coco_tiny_' in n]
    names += sorted(p.name for p in DETECTION.glob('*.py') if p.name not in generated)
    return names


@pytest.mark.parametrize('name', _one_per_model_and_method())
def test_leaf_config_describes_a_quantized_test_run(name):
    cfg = Config.fromfile(str(DETECTION / name))
    assert [h['type'] for h in cfg.custom_hooks] == ['quant_hooks.PTQHook']
    assert 'quant_hooks.registry' in cfg.custom_imports['imports']
    method = re.search(rf'_({"|".join(gen.METHODS)})_w(\d+)a(\d+)', name)
    assert cfg.quant_method['type'] == gen.METHODS[method.group(1)]
    assert (cfg.quant_method['w_bits'], cfg.quant_method['a_bits']) == (int(method.group(2)), int(method.group(3)))
    assert cfg.quant_adapter['type'] == ('ViTDetAdapter' if name.startswith('vitdet') else 'MMDetSwinAdapter')
    assert cfg.model.backbone.init_cfg is None, 'weights must come from the checkpoint, never downloaded'
    calib = cfg.quant_calibration
    if '_shapes_' in name:
        assert calib.dataset.ann_file == 'annotations/instances_calib.json' and calib.num_images == 16
        assert cfg.test_dataloader.dataset.ann_file == 'annotations/instances_val.json'
        assert cfg.test_dataloader.dataset.data_root.endswith('data/shapes/')
        model = name[:name.index('_shapes_')] + '_shapes'
        assert cfg.checkpoint.endswith(f'checkpoints/{model}/weights.safetensors')
    elif '_coco_tiny_' in name:
        assert calib.dataset.ann_file == 'annotations/instances_calib.json'
        assert cfg.test_dataloader.dataset.ann_file == 'annotations/instances_val.json'
    else:
        assert calib.dataset.ann_file == 'annotations/instances_train2017.json' and calib.num_images == 32
        assert cfg.test_dataloader.dataset.data_root == 'data/coco/'
        assert cfg.test_dataloader.dataset.ann_file == 'annotations/instances_val2017.json'
    assert not any(t['type'] == 'RandomFlip' for t in cfg.test_dataloader.dataset.pipeline)


@pytest.mark.parametrize('size, depths', [('t', [2, 2, 6, 2]), ('s', [2, 2, 18, 2])])
def test_cascade_port_holds_the_published_architecture(size, depths):
    cfg = Config.fromfile(str(MODEL_BASES / f'cascade_mask_rcnn_swin_{size}_3x.py'))
    m = cfg.model
    assert m.type == 'CascadeRCNN' and m.roi_head.type == 'CascadeRoIHead' and m.roi_head.num_stages == 3
    assert m.backbone.type == 'SwinTransformer' and m.backbone.depths == depths
    assert (m.backbone.embed_dims, m.backbone.num_heads, m.backbone.window_size) == (96, [3, 6, 12, 24], 7)
    assert m.backbone.drop_path_rate == 0.2
    assert m.neck.in_channels == [96, 192, 384, 768]
    stds = [head.bbox_coder.target_stds for head in m.roi_head.bbox_head]
    assert stds == [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
    for head in m.roi_head.bbox_head:
        assert (head.type, head.num_shared_convs, head.num_shared_fcs, head.fc_out_channels) == (
            'ConvFCBBoxHead', 4, 1, 1024)
        assert head.norm_cfg.type == 'BN' and head.loss_bbox.type == 'GIoULoss' and head.loss_bbox.loss_weight == 10
        assert head.reg_decoded_bbox is True and head.reg_class_agnostic is False
    assert m.roi_head.mask_head.type == 'FCNMaskHead' and m.roi_head.mask_head.num_convs == 4
    assert cfg.train_cfg.max_epochs == 36 and cfg.optim_wrapper.optimizer.type == 'AdamW'


def test_swin_s_1x_is_the_swin_t_1x_config_with_the_swin_s_backbone():
    t = Config.fromfile(str(MODEL_BASES / 'mask_rcnn_swin_t_1x.py'))
    s = Config.fromfile(str(MODEL_BASES / 'mask_rcnn_swin_s_1x.py'))
    s3 = Config.fromfile(str(MODEL_BASES / 'mask_rcnn_swin_s_3x.py'))
    assert s.model.backbone.depths == s3.model.backbone.depths == [2, 2, 18, 2]
    assert {k: v for k, v in s.model.backbone.items() if k != 'depths'} == \
        {k: v for k, v in t.model.backbone.items() if k != 'depths'}
    assert s.train_cfg.max_epochs == 12 and s3.train_cfg.max_epochs == 36
