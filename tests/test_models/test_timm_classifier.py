"""TimmClassifier: creation by name, strict local weights, the cache-only pretrained path, forward modes."""
from __future__ import annotations

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from quant_hooks.models import TimmClassifier, find_cached_pretrained
from quant_hooks.utils.checkpoint import CheckpointError

VIT = 'vit_tiny_patch16_224'
VIT_KW = dict(img_size=32, depth=1)


def tiny_vit(**kw) -> TimmClassifier:
    torch.manual_seed(0)
    return TimmClassifier(VIT, model_kwargs=VIT_KW, **kw).eval()


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model_name='vit_tinyy_patch16_224' is not a timm model.*close matches"):
        TimmClassifier('vit_tinyy_patch16_224')


def test_bad_model_kwargs_and_num_classes():
    with pytest.raises(TypeError, match='model_kwargs=.*invalid for timm model'):
        TimmClassifier(VIT, model_kwargs=dict(no_such_arg=1))
    with pytest.raises(ValueError, match='num_classes=-1 is invalid'):
        TimmClassifier(VIT, num_classes=-1, model_kwargs=VIT_KW)
    with pytest.raises(ValueError, match='model_kwargs.pretrained is not allowed'):
        TimmClassifier(VIT, model_kwargs=dict(pretrained=True))
    with pytest.raises(ValueError, match='exclusive'):
        TimmClassifier(VIT, checkpoint='x.pth', pretrained=True)


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_local_weights_load_strictly(tmp_path, suffix):
    src = tiny_vit()
    path = str(tmp_path / f'w{suffix}')
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    if suffix == '.pth':
        torch.save(dict(state_dict=state), path)
    else:
        save_file(state, path)
    torch.manual_seed(1)
    dst = TimmClassifier(VIT, model_kwargs=VIT_KW, checkpoint=path).eval()
    assert dst.weights_source == path
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_wrapper_state_dict_loads_too(tmp_path):
    src = tiny_vit()
    path = str(tmp_path / 'wrapper.pth')
    torch.save(src.state_dict(), path)  # keys 'model.*'
    dst = TimmClassifier(VIT, model_kwargs=VIT_KW)
    dst.load_weights(path)
    assert all(torch.equal(a, b) for a, b in zip(src.model.state_dict().values(), dst.model.state_dict().values()))


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    path = str(tmp_path / 'swin.pth')
    swin = timm.create_model('swin_tiny_patch4_window7_224', img_size=32, window_size=2, embed_dim=12, depths=(1, ),
                             num_heads=(1, ))
    torch.save(swin.state_dict(), path)
    expected = r"(?s)for timm model 'vit_tiny_patch16_224'.*does not match.*missing keys"
    with pytest.raises(CheckpointError, match=expected):
        TimmClassifier(VIT, model_kwargs=VIT_KW, checkpoint=path)
    with pytest.raises(CheckpointError, match='checkpoint file not found'):
        TimmClassifier(VIT, model_kwargs=VIT_KW, checkpoint=str(tmp_path / 'absent.pth'))


def test_pretrained_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'torch_hub'))
    with pytest.raises(CheckpointError, match=r'(?s)no cached weights.*never downloaded.*checkpoint=PATH'):
        TimmClassifier(VIT, model_kwargs=VIT_KW, pretrained=True)


def test_pretrained_from_the_local_hf_cache(tmp_path, monkeypatch):
    src = tiny_vit()
    repo = timm.get_pretrained_cfg(VIT).hf_hub_id
    cache = tmp_path / 'hf'
    snap = cache / f'models--{repo.replace("/", "--")}' / 'snapshots' / 'abc123'
    snap.mkdir(parents=True)
    (cache / f'models--{repo.replace("/", "--")}' / 'refs').mkdir()
    (cache / f'models--{repo.replace("/", "--")}' / 'refs' / 'main').write_text('abc123')
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(snap / 'model.safetensors'))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    assert find_cached_pretrained(VIT, timm.get_pretrained_cfg(VIT).to_dict()) == str(snap / 'model.safetensors')
    dst = TimmClassifier(VIT, model_kwargs=VIT_KW, pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_unfused_attention_is_timms_explicit_path():
    model = tiny_vit()
    ref = timm.create_model(VIT, **VIT_KW).eval()
    ref.load_state_dict(model.model.state_dict())
    for m in ref.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    assert all(not m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn'))


def test_predict_and_loss_modes():
    from mmengine.structures import BaseDataElement
    model = tiny_vit()
    batch = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                 data_samples=[BaseDataElement(gt_label=torch.tensor([i])) for i in (3, 7)])
    with torch.no_grad():
        out = model.test_step(batch)
    assert len(out) == 2
    for ds in out:
        assert torch.allclose(ds.pred_score.sum(), torch.tensor(1.0))
        assert int(ds.pred_label) == int(ds.pred_score.argmax())
    data = model.data_preprocessor(batch, False)
    loss = model(data['inputs'], data['data_samples'], mode='loss')['loss']
    logits = model(data['inputs'])
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([3, 7])))
    with pytest.raises(ValueError, match="mode='bad' is invalid"):
        model(data['inputs'], mode='bad')


def test_headless_model_predicts_features_and_preprocessor_uses_pretrained_mean_std():
    model = TimmClassifier(VIT, num_classes=0, model_kwargs=VIT_KW).eval()
    img = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    data = model.data_preprocessor(dict(inputs=[img]), False)
    mean, std = timm.get_pretrained_cfg(VIT).mean, timm.get_pretrained_cfg(VIT).std
    expected = (1.0 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(data['inputs'][0, :, 0, 0], expected, atol=1e-6)
    with torch.no_grad():
        out = model.test_step(dict(inputs=[img]))
    assert out[0].pred_feats.shape == (192, ) and 'pred_score' not in out[0]
