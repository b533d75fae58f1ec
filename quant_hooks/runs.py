"""quant_test runs driven by the results store: resolve a run's config, know whether it is stored, run it.

Used by tools/quant_suite.py, tools/regress.py and tools/sensitivity.py. A run is identified by the hash of its
resolved config and the digest of its checkpoint, exactly as its result record carries them, so a run already
in the store is never repeated.
"""
from __future__ import annotations

import os
import os.path as osp
import subprocess
import sys

from .apis import load_config, run_quant_test
from .results.provenance import REPO_ROOT, config_hash, file_sha256

#: config keys the options set as a whole (merging into the base config's dict could keep foreign keys)
REPLACED_KEYS = ('quant_method', )


def repo_path(path: str | None) -> str | None:
    """``path`` as given when it exists, else relative to the repository root (``None`` stays ``None``)."""
    if path is None or osp.isabs(path) or osp.exists(path):
        return path
    return osp.join(REPO_ROOT, path)


def build_run_config(config: str, options: dict | None, work_dir: str):
    """The resolved config of a run: ``config`` with ``options`` (``--cfg-options`` style keys) merged in; the
    keys in :data:`REPLACED_KEYS` replace the config's value whole."""
    options = dict(options or {})
    replaced = {k: options.pop(k) for k in REPLACED_KEYS if k in options}
    cfg = load_config(repo_path(config), options, work_dir=work_dir)
    for key, value in replaced.items():
        cfg[key] = value
    return cfg


def run_key(cfg, checkpoint: str | None) -> tuple[str, str | None]:
    """(config hash, checkpoint digest) exactly as the run's record will carry them (without ``checkpoint``, the
    config's own ``checkpoint`` key, which quant_test then loads)."""
    if checkpoint is None and cfg.get('checkpoint'):
        checkpoint = cfg.checkpoint
    return config_hash(cfg.to_dict()), file_sha256(checkpoint)


def dump_for_launcher(cfg) -> tuple[str, tuple[str, str | None]]:
    """Write the resolved config into its work dir for a launcher subprocess; returns the file and the run key
    of the config as the subprocess will read it back."""
    os.makedirs(cfg.work_dir, exist_ok=True)
    dumped = osp.join(cfg.work_dir, 'run_config.py')
    cfg.dump(dumped)
    return dumped, config_hash(load_config(dumped, work_dir=cfg.work_dir).to_dict())


def run_in_process(cfg, checkpoint: str | None, eval_float: bool, store: str) -> dict:
    """One quant_test run in this process; the record goes to ``store``."""
    return run_quant_test(cfg, repo_path(checkpoint), eval_float=eval_float, store=store)


def run_distributed(cfg, checkpoint: str | None, eval_float: bool, store: str, nproc: int) -> None:
    """One quant_test run through tools/dist_quant_test.sh (``nproc`` processes) from the dumped config."""
    dumped, _ = dump_for_launcher(cfg)
    cmd = ['bash', osp.join(REPO_ROOT, 'tools', 'dist_quant_test.sh'), dumped, repo_path(checkpoint) or '-',
           str(nproc), '--work-dir', cfg.work_dir, '--store', store] + ([] if eval_float else ['--no-float'])
    env = dict(os.environ, PYTHON=os.environ.get('PYTHON', sys.executable))
    subprocess.run(cmd, check=True, env=env)


def stored_runs(store, key: tuple[str, str | None], eval_float: bool = False) -> list[dict]:
    """The stored records of a run key; with ``eval_float`` only those that include the float pass (a run
    stored without it does not stand in for one that needs it)."""
    h, sha = key
    found = [r for r in store.records(config_hash=h) if r['checkpoint_sha256'] == sha]
    return [r for r in found if 'float' in r['metrics']] if eval_float else found
