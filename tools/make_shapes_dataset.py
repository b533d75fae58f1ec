"""Write the synthetic COCO-format shapes dataset (quant_hooks/datasets/shapes.py), deterministically.

    python tools/make_shapes_dataset.py [--root data/shapes] [--seed 0] [--split val=64 calib=16 train=3000]

The committed data/shapes holds the val and calib splits written by the defaults; the train split is written on
demand (by tools/train_default.py) into a git-ignored folder. The same seed and counts give identical files.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.datasets.shapes import SPLITS, write_split  # noqa: E402

DEFAULT_SPLITS = ('val=64', 'calib=16')


def parse_splits(items: list[str]) -> dict[str, int]:
    """``['val=64', ...]`` -> ``{'val': 64, ...}`` with a clear error for a bad item."""
    out = {}
    for item in items:
        name, _, count = item.partition('=')
        if name not in SPLITS or not count.isdigit() or int(count) < 1:
            raise ValueError(f'--split {item!r} is invalid: allowed values are NAME=COUNT with NAME in '
                             f'{sorted(SPLITS)} and COUNT >= 1')
        out[name] = int(count)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'shapes'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--split', nargs='+', default=list(DEFAULT_SPLITS), help='NAME=COUNT items')
    args = parser.parse_args(argv)
    try:
        splits = parse_splits(args.split)
    except ValueError as e:
        parser.error(str(e))
    for name, count in splits.items():
        print(write_split(args.root, args.seed, name, count))
    return 0


if __name__ == '__main__':
    sys.exit(main())
