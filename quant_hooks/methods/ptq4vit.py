"""PTQ4ViT (Yuan et al., ECCV 2022): twin uniform quantization of post-softmax and post-GELU values, searched
scales."""
from __future__ import annotations

from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .recipe import RoleRecipe, uniform


@QUANT_METHODS.register_module(name='PTQ4ViT')
class PTQ4ViT(RoleRecipe):
    """PTQ4ViT's base PTQ with twin uniform quantizers.

    * post-softmax: twin uniform (``[0, split)`` with step ``split / (2^(b-1) - 1)`` and ``[split, 1]`` with step
      ``1 / (2^(b-1) - 1)``, ``split = 2^-i`` searched);
    * post-GELU: twin uniform (positive step searched, negative step fixed at ``0.16997 / 2^(b-1)``);
    * every other activation and every weight: symmetric uniform with the searched step ``α·max|x| / (2^(b-1) - 1)``,
      ``α ∈ linspace(0.01, 1.2, 100)`` (per output channel for weights; per tensor for activations).

    Paper vs this recipe: PTQ4ViT scores the candidates with a Hessian-guided metric ``E[(∂L/∂O)²(O − Ô)²]`` of the
    layer output and alternates weight and activation searches for 3 rounds. A recipe without reconstruction has no
    task loss to differentiate (and detection has no single loss at test time), so every search here minimises
    the L2 error of the quantized tensor itself, once. The attention logits stay in float.

    Args:
        search_steps, alpha_range: the α grid.
        **kwargs: see :class:`~quant_hooks.methods.base.PTQMethod`.
    """

    def __init__(self, search_steps: int = 100, alpha_range=(0.01, 1.2), **kwargs):
        super().__init__(**kwargs)
        self.search_steps = int(search_steps)
        self.alpha_range = tuple(alpha_range)

    def _searched(self, bits: int, granularity: str) -> dict:
        return uniform(bits, granularity, symmetric=True, range_method='mse', search_steps=self.search_steps,
                       alpha_range=self.alpha_range)

    def weight_quantizer(self, site: QuantSite, bits: int):
        return self._searched(bits, 'per_channel')

    def role_quantizer(self, site, slot, role, bits):
        if role == Role.ATTN_LOGITS:
            return None
        if role == Role.POST_SOFTMAX:
            return dict(type='twin_softmax', bits=bits)
        if role == Role.POST_GELU:
            return dict(type='twin_gelu', bits=bits, search_steps=self.search_steps, alpha_range=self.alpha_range)
        return self._searched(bits, 'per_tensor')

    def describe(self):
        return dict(super().describe(), search_steps=self.search_steps, alpha_range=list(self.alpha_range),
                    metric='l2 (no Hessian: no task gradient without reconstruction)')
