"""Trained weights without the frozen pre-trained backbone: export, strict loading, clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quant_hooks.utils.checkpoint import CheckpointError, load_checkpoint
from quant_hooks.utils.detector_weights import (export_trained_weights, is_partial_checkpoint, load_detector_weights,
                                                pretrained_submodules)


class Backbone(nn.Module):
    def __init__(self, source=None):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.weights_source = source
        if source:
            self.requires_grad_(False)


class Detector(nn.Module):
    def __init__(self, source='pretrained.safetensors'):
        super().__init__()
        self.backbone = Backbone(source)
        self.neck = nn.Linear(4, 3)
        self.head = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_round_trip_leaves_out_the_backbone_and_restores_fp32(tmp_path):
    torch.manual_seed(0)
    trained = Detector()
    trained.head[1].running_mean.fill_(0.25)
    path = str(tmp_path / 'w.safetensors')
    assert export_trained_weights(trained, path, meta={'seed': 0}) == ['backbone']
    assert is_partial_checkpoint(path)
    from safetensors.torch import load_file
    stored = load_file(path)
    assert not any(k.startswith('backbone.') for k in stored)
    assert stored['neck.weight'].dtype == torch.float16 and stored['head.1.num_batches_tracked'].dtype == torch.int64

    fresh = Detector()
    assert load_checkpoint(fresh, path) == {'seed': 0}
    for k, v in fresh.state_dict().items():
        ref = trained.state_dict()[k]
        assert v.dtype == ref.dtype
        if k.startswith('backbone.'):
            assert not torch.equal(v, ref)  # left as the backbone loaded it itself
        else:
            torch.testing.assert_close(v, ref.half().to(ref.dtype), rtol=0, atol=0)


def test_only_frozen_children_with_their_own_weights_are_left_out():
    model = Detector()
    assert pretrained_submodules(model) == ['backbone']
    model.backbone.body.weight.requires_grad_(True)
    assert pretrained_submodules(model) == []
    assert pretrained_submodules(Detector(source=None)) == []


def test_loading_needs_the_backbone_weights_and_matching_keys(tmp_path):
    path = str(tmp_path / 'w.safetensors')
    export_trained_weights(Detector(), path, half=False)
    with pytest.raises(CheckpointError, match='backbone.*has none'):
        load_detector_weights(Detector(source=None), path)
    other = Detector()
    other.neck = nn.Linear(4, 5)
    with pytest.raises(CheckpointError, match=r'shape mismatches: neck.bias: checkpoint \(3,\) vs model \(5,\)'):
        load_detector_weights(other, path)
    other = Detector()
    other.extra = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match='missing keys: extra.bias, extra.weight'):
        load_detector_weights(other, path)
    full = str(tmp_path / 'full.safetensors')
    from safetensors.torch import save_file
    save_file(Detector().state_dict(), full)
    with pytest.raises(CheckpointError, match='not written by export_trained_weights'):
        load_detector_weights(Detector(), full)
