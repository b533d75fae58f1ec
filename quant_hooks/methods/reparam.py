"""RepQ-ViT's reparameterization of channel-wise post-LayerNorm quantization into a layer-wise quantizer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..quantizers import PerTensor, UniformQuantizer
from ..sites import QuantSite


@dataclass
class ReparamGroup:
    """A LayerNorm and the sites whose input it is."""

    norm_name: str
    norm: nn.Module
    sites: list[QuantSite]
    pad_owner: str = ''
    pad_module: nn.Module | None = None


def reparam_groups(sites: list[QuantSite]) -> tuple[list[ReparamGroup], list[str]]:
    """Group the sites by the LayerNorm feeding them (in network order).

    Returns:
        The groups that can be reparameterized (an affine ``nn.LayerNorm``, every consumer a linear / conv layer
        with a channel-wise uniform input quantizer; a layer without bias gets one), and the names of the sites left out with why.
    """
    groups: dict[int, ReparamGroup] = {}
    skipped = []
    for site in sites:
        info = site.norm
        if info is None:
            continue
        q = site.module.input_quantizer if site.kind in ('linear', 'conv') else None
        reason = None
        if not isinstance(info.module, nn.LayerNorm) or info.module.weight is None or info.module.bias is None:
            reason = f'{info.name} is not an affine LayerNorm'
        elif not isinstance(q, UniformQuantizer) or q.granularity.name != 'per_channel':
            reason = 'its input quantizer is not channel-wise uniform'
        if reason:
            skipped.append(f'{site.name}: {reason}')
            continue
        groups.setdefault(id(info.module), ReparamGroup(info.name, info.module, [], info.pad_owner,
                                                        info.pad_module)).sites.append(site)
    return list(groups.values()), skipped


@torch.no_grad()
def reparameterize(group: ReparamGroup) -> list[str]:
    """Fold the channel-wise input quantization of ``group`` into its LayerNorm and consumer layers.

    With the calibrated channel-wise ``(Δ_c, z_c)`` of the first consumer's input quantizer:
    ``Δ̃ = mean(Δ_c)``, ``z̃ = round(mean(z_c))``, ``r_c = Δ_c / Δ̃``, ``b_c = (z̃ - z_c)·Δ̃``; the LayerNorm becomes
    ``γ' = γ / r``, ``β' = β / r - b`` (so it outputs ``x' = x / r - b`` and ``x'/Δ̃ + z̃ = x/Δ_c + z_c``), each consumer
    ``W' = W·diag(r)``, ``bias' = bias + W'·b`` (the float model is unchanged), its input quantizer becomes layer-wise
    ``(Δ̃, z̃)``; the caller calibrates its weight quantizer again on ``W'``. A block padding the normalised grid pads with
    ``-b`` (the new image of 0).

    RepQ-ViT's code keeps ``mean(z_c)`` unrounded; rounding it keeps the zero-point an integer, and ``b`` absorbs the
    difference exactly.

    Returns:
        The model state-dict keys that changed.
    """
    q0 = group.sites[0].module.input_quantizer
    scale_c = q0.scale.flatten().double()
    zp_c = q0.zero_point.flatten().double()
    scale = scale_c.mean()
    zp = zp_c.mean().round()
    r = scale_c / scale
    b = (zp - zp_c) * scale
    norm = group.norm
    norm.weight.copy_((norm.weight.double() / r).to(norm.weight.dtype))
    norm.bias.copy_((norm.bias.double() / r - b).to(norm.bias.dtype))
    keys = [f'{group.norm_name}.weight', f'{group.norm_name}.bias']
    for site in group.sites:
        layer = site.module
        shape = (1, -1) + (1,) * (layer.weight.dim() - 2)
        w = layer.weight.double() * r.reshape(shape)
        w_in = w.flatten(2).sum(-1) if w.dim() > 2 else w  # [out, in]: a constant input's weight
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=layer.weight.dtype, device=layer.weight.device))
        layer.bias.copy_((layer.bias.double() + w_in @ b).to(layer.bias.dtype))
        layer.weight.copy_(w.to(layer.weight.dtype))
        keys += [f'{site.name}.weight', f'{site.name}.bias']
        q = layer.input_quantizer
        q.granularity = PerTensor()
        q.scale = scale.to(q0.scale.dtype).reshape(())
        q.zero_point = zp.to(q0.zero_point.dtype).reshape(())
        q.version += 1
    if group.pad_module is not None:
        group.pad_module.pad_value = (-b).to(norm.weight.dtype)
        keys.append(f'{group.pad_owner}.pad_value')
    return keys
