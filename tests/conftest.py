"""Shared fixtures. Tests that need ../shared skip with a message naming what is missing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('VITQ_SHARED', REPO.parent / 'shared'))
sys.path.insert(0, str(REPO))


def shared_path(relative: str) -> Path:
    """A path under ../shared (or $VITQ_SHARED); skips the test when it does not exist."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f'needs {path} (the shared data folder beside the checkout), which is absent')
    return path


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope='session')
def coco_tiny(repo_root) -> Path:
    return repo_root / 'data' / 'coco_tiny'


@pytest.fixture(scope='session')
def imagenet_tiny(repo_root) -> Path:
    return repo_root / 'data' / 'imagenet_tiny'


#: ImageNet normalisation of the real-image tests
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def load_imagenet_images(folder: Path, count: int, offset: int = 0, size: int = 224) -> torch.Tensor:
    """``count`` images of ``folder`` (sorted by name, from ``offset``), resized to ``size`` (bicubic),
    ImageNet-normalised, ``[count, 3, size, size]``."""
    from PIL import Image
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in ('.jpeg', '.jpg', '.png'))[offset:offset + count]
    out = []
    for f in files:
        img = Image.open(f).convert('RGB').resize((size, size), Image.BICUBIC)
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
        out.append((t.permute(2, 0, 1).float() / 255 - IMAGENET_MEAN) / IMAGENET_STD)
    return torch.stack(out)
