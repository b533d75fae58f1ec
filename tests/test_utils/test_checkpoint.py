"""Checkpoint loading: weights_only with the mmengine allowlist, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from quant_hooks.utils.checkpoint import CheckpointError, load_checkpoint, load_torch_file


def _mmengine_style_checkpoint(path, state):
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('test_ckpt_hub')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_scalar('train/lr', np.float32(1e-3))
    torch.save(dict(meta=dict(epoch=3, seed=np.int64(7), dataset_meta=dict(classes=('a', 'b'))), state_dict=state,
                    message_hub=hub.state_dict()), path)
    assert isinstance(hub.state_dict()['log_scalars']['train/loss'], HistoryBuffer)


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / 'ckpt.pth'
    _mmengine_style_checkpoint(path, model.state_dict())
    other = torch.nn.Linear(3, 2)
    meta = load_checkpoint(other, str(path))
    assert meta['epoch'] == 3 and int(meta['seed']) == 7
    assert torch.equal(other.weight, model.weight)


def test_arbitrary_getattr_is_still_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return getattr, (print, '__call__')

    torch.save(dict(x=Evil()), tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match='not allowed under weights_only'):
        load_torch_file(str(tmp_path / 'evil.pth'))


def test_module_prefix_and_model_key_are_accepted(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.save(dict(model={f'module.{k}': v for k, v in model.state_dict().items()}), tmp_path / 'ddp.pth')
    other = torch.nn.Linear(3, 2)
    load_checkpoint(other, str(tmp_path / 'ddp.pth'))
    assert torch.equal(other.bias, model.bias)


def test_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_file(model.state_dict(), tmp_path / 'w.safetensors')
    other = torch.nn.Linear(3, 2)
    load_checkpoint(other, str(tmp_path / 'w.safetensors'))
    assert torch.equal(other.weight, model.weight)
    (tmp_path / 'bad.safetensors').write_bytes(b'garbage')
    with pytest.raises(CheckpointError, match='corrupt or not a safetensors file'):
        load_torch_file(str(tmp_path / 'bad.safetensors'))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint file not found'):
        load_torch_file(str(tmp_path / 'nope.pth'))
    (tmp_path / 'trunc.pth').write_bytes(b'PK\x03\x04 truncated zip')
    with pytest.raises(CheckpointError, match='corrupt'):
        load_torch_file(str(tmp_path / 'trunc.pth'))
    torch.save([1, 2, 3], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='holds a list, expected a dict'):
        load_checkpoint(torch.nn.Linear(3, 2), str(tmp_path / 'list.pth'))
    torch.save(dict(weight=torch.zeros(2, 3), extra=torch.zeros(1)), tmp_path / 'mismatch.pth')
    with pytest.raises(CheckpointError, match=r'1 missing keys: bias[\s\S]*1 unexpected keys: extra'):
        load_checkpoint(torch.nn.Linear(3, 2), str(tmp_path / 'mismatch.pth'))
