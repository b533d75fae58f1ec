"""Convert an official Swin detection checkpoint (Swin-Transformer-Object-Detection, mmdet 2.x key names) for the
mmdet 3.x model of a config, checking every key against that model.

    python tools/convert_swin_det_checkpoint.py SRC.pth CONFIG DST.pth [--allow-partial]

    e.g. python tools/convert_swin_det_checkpoint.py cascade_mask_rcnn_swin_tiny_patch4_window7.pth \\
             configs/_base_/models/cascade_mask_rcnn_swin_t_3x.py work_dirs/cascade_swin_t_3x_mmdet3.pth

The source is read with ``torch.load(weights_only=True)``. The converted weights are compared with the model the
config builds: every missing, unexpected or wrongly shaped key (and any fixed buffer whose values differ) is
listed, and nothing is written unless all match, or ``--allow-partial`` is given (then only the matching entries
are written, and loading the result strictly will fail until the rest is supplied). The output holds
``state_dict`` and ``meta`` and loads with ``tools/quant_test.py CONFIG DST.pth``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from quant_hooks.utils.checkpoint import CheckpointError, extract_state_dict, load_torch_file  # noqa: E402
from quant_hooks.utils.swin_det_checkpoint import (MatchReport, convert_swin_det_state_dict,  # noqa: E402
                                                   match_state_dict)


def build_model_from_config(config: str, cfg_options: dict | None = None) -> torch.nn.Module:
    """The (randomly initialised) model of an mmdet config, built on CPU without downloading weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings

    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config!r}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    import quant_hooks.registry  # noqa: F401  (configs name quant_hooks.* components)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def convert_checkpoint(src: str, config: str, dst: str, allow_partial: bool = False,
                       cfg_options: dict | None = None) -> MatchReport:
    """Convert ``src`` for the model of ``config`` and write ``dst``; returns the match report.

    Raises:
        CheckpointError: the source is unreadable, or it does not match the model and ``allow_partial`` is False
            (nothing is written then).
    """
    state = extract_state_dict(load_torch_file(src))
    converted, renamed = convert_swin_det_state_dict(state)
    own = build_model_from_config(config, cfg_options).state_dict()
    report = match_state_dict(converted, own)
    if not report.ok and not allow_partial:
        raise CheckpointError('\n'.join([f'{src} does not match the model of {config} after conversion '
                                         f'({renamed} backbone keys renamed); nothing written:'] + report.lines() +
                                        ['(pass --allow-partial to write the matching entries anyway)']))
    bad = report.bad_keys()
    kept = {k: v.clone() for k, v in converted.items() if k not in bad}
    meta = dict(converted_from=osp.basename(src), converter='tools/convert_swin_det_checkpoint.py',
                config=osp.basename(config), renamed_keys=renamed, partial=not report.ok,
                dropped_keys=sorted(k for k in bad if k in converted))
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = f'{dst}.tmp'
    torch.save(dict(state_dict=kept, meta=meta), tmp)
    os.replace(tmp, dst)
    return report


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Convert an official Swin detection checkpoint to mmdet 3.x names')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('config', help='config whose model the checkpoint must match')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--allow-partial', action='store_true',
                        help='write the matching entries even if some keys do not match (reported)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = convert_checkpoint(args.src, args.config, args.dst, args.allow_partial, args.cfg_options)
    except CheckpointError as e:
        print(f'ERROR: {e}', file=sys.stderr)
        return 1
    if report.ok:
        print(f'wrote {args.dst}: every key and shape matches the model of {args.config}')
    else:
        print('\n'.join([f'WARNING: wrote a PARTIAL checkpoint {args.dst} (--allow-partial):'] + report.lines()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
