"""A deterministic synthetic instance-segmentation dataset in COCO format: coloured shapes on textured backgrounds.

Every image is drawn from its own seeded generator (``seed``, split and index), so any image can be regenerated
alone and a split is identical on every machine. Shapes (five classes) vary in size, aspect, rotation and colour and
overlap: later shapes occlude earlier ones, and the annotation of each shape is the polygon of its visible part
(placements whose visible part would be tiny, split into pieces or hold a hole are redrawn, so every mask is one
simple polygon). Backgrounds mix a smooth colour field, band-limited noise and stripes.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('ellipse', 'rectangle', 'triangle', 'star', 'cross')
SPLITS = {'train': 1, 'val': 2, 'calib': 3}


def _unit_outline(cls: str, rng: np.random.Generator) -> np.ndarray:
    """The outline of a class in a unit box centred at 0, shape ``(N, 2)``."""
    if cls == 'ellipse':
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == 'rectangle':
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if cls == 'triangle':
        t = np.array([90, 210, 330]) * np.pi / 180 + rng.uniform(-0.3, 0.3, 3)
        return np.stack([np.cos(t), -np.sin(t)], 1)
    if cls == 'star':
        points = int(rng.integers(5, 7))
        t = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
        r = np.where(np.arange(2 * points) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    w = rng.uniform(0.3, 0.45)
    return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w],
                     [-1, -w], [-w, -w]], float)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured ``(size, size, 3)`` uint8 background."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    img = c0 * (1 - ramp) + c1 * ramp
    cells = int(rng.integers(4, 17))
    noise = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
    noise = np.asarray(Image.fromarray(((noise + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), np.float32) / 40 - 3
    img = img + noise * rng.uniform(8, 30)
    freq = rng.uniform(4, 24)
    phase = rng.uniform(0, 2 * np.pi)
    theta = rng.uniform(0, np.pi)
    stripes = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)[..., None]
    img = img + stripes * rng.uniform(0, 25) * rng.uniform(-1, 1, 3)
    img = img + rng.normal(0, rng.uniform(2, 8), img.shape)
    return img.clip(0, 255).astype(np.uint8)


def render_image(seed: int, split: str, index: int, size: int = 224, max_objects: int = 6,
                 min_size: float = 18.0, max_size: float = 110.0) -> tuple[Image.Image, list[dict]]:
    """Draw one image and its annotations.

    Args:
        seed: dataset seed.
        split: one of ``SPLITS`` (each split draws from its own generator stream).
        index: image index within the split.
        size: image side in pixels.
        max_objects: at most this many shapes (at least 1).
        min_size: smallest shape extent in pixels.
        max_size: largest shape extent in pixels.

    Returns:
        The RGB image and a list of ``dict(category=int, polygon=list[float], bbox=[x, y, w, h], area=float)``
        (category ids 1..5 in ``CLASSES`` order).
    """
    from shapely.geometry import Polygon

    if split not in SPLITS:
        raise ValueError(f'split={split!r} is invalid: allowed values are {sorted(SPLITS)}')
    rng = np.random.default_rng([seed, SPLITS[split], index])
    img = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(img)
    placed: list[tuple[int, Polygon]] = []
    target = int(rng.integers(1, max_objects + 1))
    frame = Polygon([(0, 0), (size, 0), (size, size), (0, size)])
    attempts = 0
    while len(placed) < target and attempts < 60:
        attempts += 1
        cls_idx = int(rng.integers(len(CLASSES)))
        outline = _unit_outline(CLASSES[cls_idx], rng)
        extent = np.exp(rng.uniform(np.log(min_size), np.log(max_size)))
        aspect = np.exp(rng.uniform(-0.4, 0.4))
        scale = np.array([aspect, 1 / aspect]) * extent / 2
        rot = rng.uniform(0, 2 * np.pi)
        R = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        centre = rng.uniform(extent * 0.3, size - extent * 0.3, 2)
        pts = (outline * scale) @ R.T + centre
        shape = Polygon(pts).buffer(0).intersection(frame)
        if shape.is_empty or shape.geom_type != 'Polygon' or shape.area < 0.6 * Polygon(pts).area:
            continue
        # the new shape must leave every earlier one a single, hole-free, mostly visible polygon
        ok = True
        for cls_prev, vis_prev in placed:
            rest = vis_prev.difference(shape)
            if rest.geom_type != 'Polygon' or rest.interiors or rest.area < 0.45 * vis_prev.area or rest.area < 120:
                ok = False
                break
        if not ok:
            continue
        placed = [(c, v.difference(shape)) for c, v in placed] + [(cls_idx, shape)]
        colour = rng.integers(0, 256, 3)
        draw.polygon([tuple(p) for p in pts], fill=tuple(int(c) for c in colour),
                     outline=tuple(int(c) for c in (colour * rng.uniform(0.4, 0.9))) if rng.random() < 0.5 else None)
    anns = []
    for cls_idx, vis in placed:
        vis = vis.simplify(0.3, preserve_topology=True)
        coords = np.asarray(vis.exterior.coords)[:-1]
        x0, y0, x1, y1 = vis.bounds
        anns.append(dict(category=cls_idx + 1, polygon=[round(float(v), 2) for v in coords.reshape(-1)],
                         bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                         area=round(float(vis.area), 2)))
    return img, anns


def iter_split(seed: int, split: str, num_images: int, **kwargs) -> Iterator[tuple[str, Image.Image, list[dict]]]:
    """``(file_name, image, annotations)`` for the images of a split, in order."""
    for i in range(num_images):
        img, anns = render_image(seed, split, i, **kwargs)
        yield f'{split}_{i:06d}.jpg', img, anns


def write_split(root: str | Path, seed: int, split: str, num_images: int, quality: int = 92, **kwargs) -> Path:
    """Write a split as ``root/<split>/*.jpg`` and ``root/annotations/instances_<split>.json``; returns the JSON.

    Raises:
        ValueError: ``num_images`` < 1 or a bad split name.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f'num_images={num_images!r} is invalid: allowed values are integers >= 1')
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (name, img, anns) in enumerate(iter_split(seed, split, num_images, **kwargs), start=1):
        img.save(root / split / name, quality=quality)
        images.append(dict(id=image_id, file_name=name, width=img.width, height=img.height))
        for ann in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=ann['category'],
                                    segmentation=[ann['polygon']], bbox=ann['bbox'], area=ann['area'], iscrowd=0))
    coco = dict(info=dict(description=f'vitq-bench shapes, seed {seed}, split {split}'), licenses=[],
                images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(CLASSES)])
    ann_file = root / 'annotations' / f'instances_{split}.json'
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return ann_file
