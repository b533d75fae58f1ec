"""The smallest real quant_test run: DeiT-T with one block at 32x32 on the bundled ImageNet sample (random
weights, seeded), about 8 s on 2 CPU cores."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = 'configs/classification/deit_t_imagenet_tiny_minmax_w8a8.py'
#: as a suite / reference file gives them
TINY_OPTIONS_DICT = {'model.model_kwargs.img_size': 32, 'model.model_kwargs.depth': 1,
                     'test_dataloader.dataset.pipeline.1.input_size': 32, 'log_level': 'WARNING'}
#: as --cfg-options
TINY_OPTIONS = [f'{k}={v}' for k, v in TINY_OPTIONS_DICT.items()]


def load_tool(name: str):
    """tools/NAME.py as a module (tools/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'{name}_tool', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
