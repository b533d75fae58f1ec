"""Where a result came from: config hash, checkpoint digest, git state, library versions, machine, memory."""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import platform
import resource
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: config keys that do not change the numbers a run produces (output places, logging, launcher, the store)
HASH_EXCLUDED_KEYS = ('work_dir', 'launcher', 'load_from', 'resume', 'env_cfg', 'model_wrapper_cfg', 'log_level',
                      'default_hooks', 'log_processor', 'visualizer', 'vis_backends', 'results_store',
                      'results_extra')

#: the packages whose versions every record carries
VERSIONED_PACKAGES = ('torch', 'mmcv', 'mmdet', 'mmengine', 'timm')


def _portable(obj: Any, root: str) -> Any:
    """``obj`` with absolute paths inside ``root`` made relative to it, so that hashes do not depend on where
    the checkout lives."""
    if isinstance(obj, dict):
        return {str(k): _portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_portable(v, root) for v in obj]
    if isinstance(obj, str) and osp.isabs(obj):
        norm = osp.normpath(obj)
        if norm == root or norm.startswith(root + os.sep):
            return '<repo>/' + osp.relpath(norm, root).replace(os.sep, '/') + ('/' if obj.endswith('/') else '')
    return obj


def config_hash(cfg_dict: dict, root: str = REPO_ROOT) -> str:
    """SHA-256 (first 16 hex digits) of a resolved config, without the keys in :data:`HASH_EXCLUDED_KEYS`.

    Args:
        cfg_dict: the resolved config as a plain dict (``Config.to_dict()``).
        root: absolute paths under this directory are hashed relative to it.
    """
    kept = {k: v for k, v in cfg_dict.items() if k not in HASH_EXCLUDED_KEYS}
    text = json.dumps(_portable(kept, osp.normpath(root)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: str | None, prefix: int = 16) -> str | None:
    """The first ``prefix`` hex digits of a file's SHA-256; ``None`` when ``path`` is not a local file."""
    if not path or not osp.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()[:prefix]


def git_state(root: str = REPO_ROOT) -> dict:
    """``dict(commit=..., dirty=...)`` of the checkout at ``root`` (``None`` values outside a git checkout)."""
    def git(*args):
        return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=30)
    try:
        head = git('rev-parse', 'HEAD')
        if head.returncode != 0:
            return dict(commit=None, dirty=None)
        status = git('status', '--porcelain', '--untracked-files=no')
    except (OSError, subprocess.SubprocessError):
        return dict(commit=None, dirty=None)
    return dict(commit=head.stdout.strip(), dirty=bool(status.stdout.strip()))


def versions() -> dict:
    """Python and the installed versions of :data:`VERSIONED_PACKAGES` (``None`` if one is not installed)."""
    out = dict(python=platform.python_version())
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    """Host name, platform, CPU and (when torch sees one) the GPU."""
    info = dict(hostname=socket.gethostname(), platform=platform.platform(), processor=platform.machine(),
                cpu_count=os.cpu_count(), gpu=None)
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def peak_memory() -> dict:
    """Peak resident memory of this process and (when CUDA is in use) peak GPU memory allocated, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mb = rss / 1024 / (1024 if sys.platform == 'darwin' else 1)
    gpu = None
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gpu = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return dict(cpu_rss_mb=round(rss_mb, 1), gpu_mb=gpu)
