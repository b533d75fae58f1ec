"""Write a COCO-format subset: N images (seeded choice) with their annotations and the full category list.

Example (how the bundled ``data/coco_tiny`` was made from the shared val2017 sample)::

    python tools/make_coco_subset.py ../shared/data/coco_val2017_subset/annotations/instances_val2017.json \
        ../shared/data/coco_val2017_subset/val2017 data/coco_tiny --split val --num 20 --seed 0
    python tools/make_coco_subset.py ... data/coco_tiny --split calib --num 8 --seed 1 \
        --exclude data/coco_tiny/annotations/instances_val.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('ann_file', help='source COCO instances JSON')
    p.add_argument('img_dir', help='source image folder')
    p.add_argument('out_root', help='output root: writes OUT/SPLIT/*.jpg and OUT/annotations/instances_SPLIT.json')
    p.add_argument('--split', required=True, help='split name, e.g. val or calib')
    p.add_argument('--num', type=int, required=True, help='number of images')
    p.add_argument('--seed', type=int, default=0, help='seed of the random choice')
    p.add_argument('--exclude', nargs='*', default=[], help='COCO JSONs whose images must not be chosen')
    return p.parse_args()


def main():
    args = parse_args()
    with open(args.ann_file) as f:
        src = json.load(f)
    excluded = set()
    for path in args.exclude:
        with open(path) as f:
            excluded |= {im['id'] for im in json.load(f)['images']}
    pool = sorted((im for im in src['images'] if im['id'] not in excluded), key=lambda im: im['id'])
    if args.num > len(pool):
        raise SystemExit(f'--num {args.num} exceeds the {len(pool)} available images')
    chosen = sorted(random.Random(args.seed).sample(pool, args.num), key=lambda im: im['id'])
    ids = {im['id'] for im in chosen}
    out = dict(info=src.get('info', {}), licenses=src.get('licenses', []), images=chosen,
               annotations=[a for a in src['annotations'] if a['image_id'] in ids], categories=src['categories'])
    os.makedirs(os.path.join(args.out_root, args.split), exist_ok=True)
    os.makedirs(os.path.join(args.out_root, 'annotations'), exist_ok=True)
    for im in chosen:
        shutil.copyfile(os.path.join(args.img_dir, im['file_name']),
                        os.path.join(args.out_root, args.split, im['file_name']))
    with open(os.path.join(args.out_root, 'annotations', f'instances_{args.split}.json'), 'w') as f:
        json.dump(out, f)
    print(f'{args.split}: {len(chosen)} images, {len(out["annotations"])} annotations -> {args.out_root}')


if __name__ == '__main__':
    main()
