"""Write the classification leaf configs: every model base × quant method base × bit width, by inheritance.

    python tools/make_cls_configs.py [--check]

Leaves go to configs/classification/<model>_<method>_w<b>a<b>.py (ImageNet val) plus one
<model>_imagenet_tiny_minmax_w8a8.py per model on the bundled sample. ``--check`` only reports leaves that are
missing or differ from what would be written (exit status 1), so a test can keep them in sync.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OUT = osp.join(ROOT, 'configs', 'classification')

#: model base file name -> what the leaf's first comment line calls it
MODELS = {
    'vit_s': 'ViT-S/16', 'vit_b': 'ViT-B/16', 'deit_t': 'DeiT-T/16', 'deit_s': 'DeiT-S/16', 'deit_b': 'DeiT-B/16',
    'swin_t': 'Swin-T', 'swin_s': 'Swin-S', 'swin_b': 'Swin-B', 'mobilevit_xxs': 'MobileViT-XXS',
    'mobilevit_xs': 'MobileViT-XS', 'mobilevit_s': 'MobileViT-S', 'mobilevitv2_100': 'MobileViTv2-1.0',
    'efficientformer_l1': 'EfficientFormer-L1', 'efficientformerv2_s0': 'EfficientFormerV2-S0',
    'efficientformerv2_l': 'EfficientFormerV2-L',
}
sys.path.insert(0, osp.join(ROOT, 'tools'))
from make_quant_bases import METHODS  # noqa: E402  (method base name -> registered method name)

#: per-method settings of the classification leaves: the token count is fixed, so ADFQ-ViT uses its static
#: per-position post-LayerNorm scales as the authors' code does
CLS_SETTINGS = {'adfq_vit': "quant_method = dict(post_ln_granularity='per_token_static')\n"}
BITS = ((8, 8), (6, 6), (4, 4))

TEMPLATE = """# {title} on {data}; {method} W{w}/A{a}.
_base_ = [
    '../_base_/models/{model}.py',
    '../_base_/datasets/{dataset}.py',
    '../_base_/quant/{quant}_w{w}a{a}.py',
]
test_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
"""


def leaves() -> dict[str, str]:
    """file name -> content of every leaf config."""
    out = {}
    for model, title in MODELS.items():
        for quant, method in METHODS.items():
            for w, a in BITS:
                out[f'{model}_{quant}_w{w}a{a}.py'] = TEMPLATE.format(
                    title=title, data='ImageNet val', method=method, w=w, a=a, model=model, dataset='imagenet',
                    quant=quant) + CLS_SETTINGS.get(quant, '')
        for quant, method in METHODS.items():
            out[f'{model}_imagenet_tiny_{quant}_w8a8.py'] = TEMPLATE.format(
                title=title, data='the bundled ImageNet sample', method=method, w=8, a=8, model=model,
                dataset='imagenet_tiny', quant=quant) + CLS_SETTINGS.get(quant, '')
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='report stale or missing leaves, write nothing')
    args = parser.parse_args(argv)
    stale = []
    for name, text in leaves().items():
        path = osp.join(OUT, name)
        current = open(path).read() if osp.isfile(path) else None
        if current != text:
            stale.append(name)
            if not args.check:
                with open(path, 'w') as f:
                    f.write(text)
    if args.check and stale:
        print(f'{len(stale)} classification configs are stale or missing, e.g. {stale[:5]}: run '
              'python tools/make_cls_configs.py')
        return 1
    print(f'{len(leaves())} classification configs, {len(stale)} {"stale" if args.check else "written"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
