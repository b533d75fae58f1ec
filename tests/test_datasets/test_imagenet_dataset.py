"""ImageNetDataset (synset folders, FILE LABEL lists, validation) and the timm transforms."""
from __future__ import annotations

import shutil

import pytest
import timm
import torch
from PIL import Image

from quant_hooks.datasets import (DatasetError, ImageNetDataset, LoadImageRGB, PackClsInputs, TimmEvalTransform,
                                  resolve_timm_eval_config)


def read_labels(path):
    return [(line.split()[0], int(line.split()[1])) for line in open(path) if line.strip()]


def test_label_file_layout(imagenet_tiny):
    ds = ImageNetDataset(data_root=str(imagenet_tiny), ann_file='val.txt', data_prefix=dict(img_path='val'))
    expected = read_labels(imagenet_tiny / 'val.txt')
    assert len(ds) == len(expected) == 12
    for i, (name, label) in enumerate(expected):
        info = ds.get_data_info(i)
        assert info['img_path'].endswith(name) and info['gt_label'] == label and info['sample_idx'] == i


def test_synset_folder_layout_gives_sorted_synset_labels(tmp_path, imagenet_tiny):
    images = sorted((imagenet_tiny / 'val').iterdir())
    layout = {'n02000000': images[:2], 'n01000000': images[2:5], 'n03000000/nested': images[5:6]}
    for folder, files in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp_path / folder / f.name)
    (tmp_path / 'n01000000' / 'notes.txt').write_text('not an image')
    ds = ImageNetDataset(data_root=str(tmp_path))
    labels = [ds.get_data_info(i)['gt_label'] for i in range(len(ds))]
    assert ds.synsets == ['n01000000', 'n02000000', 'n03000000']
    assert labels == [0, 0, 0, 1, 1, 2]


def test_folder_without_images_is_a_clear_error(tmp_path, imagenet_tiny):
    (tmp_path / 'n01000000').mkdir()
    with pytest.raises(DatasetError, match='no images found'):
        ImageNetDataset(data_root=str(tmp_path))
    loose = tmp_path / 'loose'
    loose.mkdir()
    shutil.copy(next((imagenet_tiny / 'val').iterdir()), loose / 'a.JPEG')
    with pytest.raises(DatasetError, match='images lie directly in the folder: give ann_file'):
        ImageNetDataset(data_root=str(loose))
    with pytest.raises(DatasetError, match='image folder not found'):
        ImageNetDataset(data_root=str(tmp_path / 'absent'))


def test_labels_out_of_range_are_a_clear_error(tmp_path, imagenet_tiny):
    with pytest.raises(DatasetError, match=r'labels in ann_file .* are out of range: allowed values are 0 .. 99'):
        ImageNetDataset(data_root=str(imagenet_tiny), ann_file='val.txt', data_prefix=dict(img_path='val'),
                        num_classes=100)
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    with pytest.raises(DatasetError, match='more than num_classes=1'):
        ImageNetDataset(data_root=str(tmp_path), num_classes=1)
    bad = tmp_path / 'neg.txt'
    bad.write_text(f'{read_labels(imagenet_tiny / "val.txt")[0][0]} -1\n')
    with pytest.raises(DatasetError, match='out of range'):
        ImageNetDataset(ann_file=str(bad), data_prefix=dict(img_path=str(imagenet_tiny / 'val')))


def test_bad_list_files_are_clear_errors(tmp_path, imagenet_tiny):
    val = dict(img_path=str(imagenet_tiny / 'val'))
    for text, match in (('a.JPEG\n', 'expected "FILE LABEL"'), ('a.JPEG x\n', 'LABEL must be an integer'),
                        ('absent.JPEG 3\n', 'do not exist')):
        f = tmp_path / 'list.txt'
        f.write_text(text)
        with pytest.raises(DatasetError, match=match):
            ImageNetDataset(ann_file=str(f), data_prefix=val)
    with pytest.raises(DatasetError, match='ann_file not found'):
        ImageNetDataset(ann_file=str(tmp_path / 'none.txt'), data_prefix=val)
    with pytest.raises(DatasetError, match='num_classes=0 is invalid'):
        ImageNetDataset(ann_file=str(tmp_path / 'none.txt'), data_prefix=val, num_classes=0)


@pytest.mark.parametrize('model_name', ['deit_tiny_patch16_224', 'mobilevit_xxs'])
def test_timm_eval_transform_matches_timm(imagenet_tiny, model_name):
    path = str(next(iter(sorted((imagenet_tiny / 'val').iterdir()))))
    tf = TimmEvalTransform(model_name=model_name)
    cfg = timm.get_pretrained_cfg(model_name)
    assert tf.data_config['crop_pct'] == cfg.crop_pct and tf.data_config['input_size'] == cfg.input_size
    out = tf(LoadImageRGB()(dict(img_path=path)))['img']
    assert out.dtype == torch.uint8 and tuple(out.shape) == cfg.input_size
    timm_tf = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=cfg.to_dict()))
    ref = timm_tf(Image.open(path).convert('RGB'))
    mine = (out.float() / 255 - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    assert torch.allclose(mine, ref, atol=1e-5)


def test_eval_config_overrides_and_errors():
    cfg = resolve_timm_eval_config('deit_tiny_patch16_224', input_size=64, crop_pct=1.0)
    assert cfg['input_size'] == (3, 64, 64) and cfg['crop_pct'] == 1.0
    with pytest.raises(ValueError, match='input_size=0 is invalid'):
        resolve_timm_eval_config('deit_tiny_patch16_224', input_size=0)
    with pytest.raises(ValueError, match='crop_pct=1.5 is invalid'):
        resolve_timm_eval_config('deit_tiny_patch16_224', crop_pct=1.5)
    with pytest.raises(ValueError, match='is not a timm model'):
        TimmEvalTransform(model_name='no_such_model')


def test_pipeline_packs_inputs_and_labels(imagenet_tiny):
    pipeline = [dict(type='LoadImageRGB'), dict(type='TimmEvalTransform', model_name='deit_tiny_patch16_224',
                                                 input_size=48), dict(type='PackClsInputs')]
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('quant_hooks'):
        ds = ImageNetDataset(data_root=str(imagenet_tiny), ann_file='val.txt', data_prefix=dict(img_path='val'),
                             pipeline=pipeline)
        item = ds[3]
    assert item['inputs'].shape == (3, 48, 48) and item['inputs'].dtype == torch.uint8
    assert int(item['data_samples'].gt_label) == read_labels(imagenet_tiny / 'val.txt')[3][1]
    assert item['data_samples'].sample_idx == 3
    with pytest.raises(TypeError, match='run TimmEvalTransform first'):
        PackClsInputs()(dict(img=Image.new('RGB', (4, 4))))
    with pytest.raises(OSError, match='cannot read image'):
        LoadImageRGB()(dict(img_path=str(imagenet_tiny / 'val.txt')))
