"""tools/install.sh is idempotent: on an environment it set up, a second run changes nothing."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_second_run_is_a_no_op():
    venv = Path(sys.prefix)
    stamp = venv / '.vitq-bench-installed'
    if not stamp.is_file():
        pytest.skip(f'the running environment {venv} was not set up by tools/install.sh')
    current = hashlib.sha256((REPO / 'requirements.txt').read_bytes() + (REPO / 'tools/install.sh').read_bytes())
    if stamp.read_text().strip() != current.hexdigest():
        pytest.skip(f'{venv} was set up by an older tools/install.sh or requirements.txt: run tools/install.sh')
    env = dict(os.environ, VENV=str(venv))
    proc = subprocess.run(['bash', str(REPO / 'tools/install.sh')], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'is up to date' in proc.stderr
    assert 'installing' not in proc.stderr


def test_requirements_pin_the_stack():
    pins = dict(line.split('==') for line in (REPO / 'requirements.txt').read_text().splitlines()
                if '==' in line and not line.startswith('#'))
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1'
    assert pins['mmengine'] == '0.10.7' and pins['mmcv'] == '2.1.0' and pins['mmdet'] == '3.3.0'
    assert pins['timm'].startswith('1.0.') and pins['pycocotools'].startswith('2.0.')
    assert 'setuptools<81' in (REPO / 'requirements.txt').read_text()
