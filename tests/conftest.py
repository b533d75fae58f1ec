"""Shared fixtures. Tests that need ../shared skip with a message naming what is missing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
