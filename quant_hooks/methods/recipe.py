"""What the papers' recipes share: one quantizer config per role, helpers for the usual quantizers, and the
per-site facts recipes record in the results."""
from __future__ import annotations

from collections import Counter

from ..sites import QuantSite, Role
from .base import PTQMethod, iter_quantizers


def uniform(bits: int, granularity='per_tensor', symmetric: bool = False, range_method: str = 'minmax',
            **kwargs) -> dict:
    """Config of a uniform quantizer (granularity by meaning, resolved per slot)."""
    return dict(type='uniform', bits=bits, granularity=granularity, symmetric=symmetric, range_method=range_method,
                **kwargs)


def is_grouped_conv(site: QuantSite) -> bool:
    """A depthwise / grouped convolution (Q-HyViT keeps its input channel-wise)."""
    return site.kind == 'conv' and getattr(site.module, 'groups', 1) > 1


class RoleRecipe(PTQMethod):
    """A recipe given by a quantizer config per role.

    Subclasses implement :meth:`role_quantizer`; the attention logits stay in float unless a recipe quantizes them
    (FQ-ViT), and the summary counts which quantizer each role got.
    """

    def role_quantizer(self, site: QuantSite, slot: str, role: str, bits: int) -> dict | None:
        raise NotImplementedError

    def act_quantizer(self, site, slot, role, bits):
        return self.role_quantizer(site, slot, role, bits)

    def finish(self, sites, run_calibration):
        return dict(super().finish(sites, run_calibration), quantizers_by_role=quantizers_by_role(sites))


def quantizers_by_role(sites: list[QuantSite]) -> dict[str, dict[str, int]]:
    """role -> {quantizer class: count} over the installed quantizers."""
    out: dict[str, Counter] = {}
    for site, slot, q in iter_quantizers(sites):
        out.setdefault(site.roles[slot], Counter())[type(q).__name__] += 1
    return {role: dict(sorted(c.items())) for role, c in sorted(out.items())}


def is_attention_role(role: str) -> bool:
    return role in (Role.Q, Role.K, Role.V, Role.POST_SOFTMAX, Role.ATTN_LOGITS)
