"""A tiny timm ViT with quantizers assigned, and its calibration runner, for the reconstruction tests."""
from __future__ import annotations

import timm
import torch

from quant_hooks.adapters import TimmViTAdapter, run_batches


def tiny_vit(depth: int = 1, seed: int = 0):
    """(model, sites, run_calibration) for a 2-head ViT on 32x32 images, three calibration batches of 4."""
    torch.manual_seed(seed)
    net = timm.create_model('vit_tiny_patch16_224', img_size=32, depth=depth, num_classes=10, embed_dim=32,
                            num_heads=2).eval()
    adapter = TimmViTAdapter()
    sites = adapter.prepare(net)
    gen = torch.Generator().manual_seed(seed + 1)
    images = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(3)]
    return net, sites, lambda: run_batches(adapter, net, images)


def quantizer_state(model) -> dict:
    from quant_hooks.state import quantizer_state_dict
    return {k: v.clone() for k, v in quantizer_state_dict(model).items()}
