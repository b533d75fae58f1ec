"""NoisyQuant (Liu et al., CVPR 2023): a fixed noisy bias on the inputs of linear layers, around any recipe."""
from __future__ import annotations

import math
import time

import torch
from mmengine.dist import is_main_process
from tqdm import tqdm

from ..registry import QUANT_METHODS
from ..sites import QuantSite, Role
from .base import PTQMethod, iter_quantizers, set_quant_enabled

DEFAULT_ROLES = (Role.POST_LN, Role.POST_GELU, Role.ATTN_OUT)


@QUANT_METHODS.register_module(name='NoisyQuant')
class NoisyQuant(PTQMethod):
    """NoisyQuant on top of another recipe: ``dict(type='NoisyQuant', base=dict(type='PTQ4ViT', w_bits=6, a_bits=6))``.

    The base recipe chooses every quantizer; on the input slots of linear / conv layers whose role is in ``roles``,
    its activation quantizer is wrapped in a ``noisy`` quantizer: a fixed noise ``N ~ U(-Δ/2, Δ/2)`` per input
    channel (seeded, one seed per site), quantize ``x + N``, and ``-W·N`` folded into the layer's bias (no run-time
    cost). With ``search`` (the paper's per-layer search), each layer's noise range and mean are chosen to minimise
    the MSE of the layer output (quantized weight, noisy quantized input) against the float layer output on the
    calibration inputs; the grid holds "no noise", so a layer never gets worse on those inputs.

    Paper vs code: the authors' simple code draws unseeded Gaussian noise and searches the mean over
    ``Δ·i/200, i ∈ [-200, 200)`` and the range over 2000 steps; here the paper's uniform noise, seeded, and a
    coordinate search over ``search_ranges`` × ``search_means`` (units of Δ).

    Args:
        base: the recipe to wrap (its ``w_bits`` / ``a_bits`` default to this method's).
        roles: input roles that get noise (the paper: the inputs of the linear layers).
        seed: seed of the noise draws (site ``i`` uses ``seed + i``).
        search: run the per-layer noise search.
        search_batches: calibration batches whose layer inputs the search scores on (bounds its memory).
        search_ranges, search_means: candidate noise ranges and means in units of Δ (``None``: 0..2 and -1..1 in
            steps of 1/8).
        max_samples: ``None`` (exact) or the base recipe's ``max_samples`` (see
            :class:`~quant_hooks.methods.base.PTQMethod`); the noise search of a linear layer then scores an evenly
            strided subset of the tokens of each kept input, at most ``max_samples`` values (at least one token;
            convolution inputs are kept whole). The results record the values each layer's search scored.
        **kwargs: see :class:`~quant_hooks.methods.base.PTQMethod`.
    """

    def __init__(self, base: dict | None = None, roles=DEFAULT_ROLES, seed: int = 0, search: bool = True,
                 search_batches: int = 2, search_ranges=None, search_means=None, w_bits: int | None = None,
                 a_bits: int | None = None, max_samples: int | None = None, **kwargs):
        from ..registry import QUANT_METHODS as methods
        base = dict(base or dict(type='PTQ4ViT'))
        if base.get('type') == 'NoisyQuant':
            raise ValueError("base.type='NoisyQuant' is invalid: allowed values are the other registered methods")
        for key, value in (('w_bits', w_bits), ('a_bits', a_bits), ('max_samples', max_samples)):
            if value is not None:
                base.setdefault(key, value)
        self.base = methods.build(base)
        super().__init__(w_bits=self.base.w_bits, a_bits=self.base.a_bits, max_samples=self.base.max_samples,
                         **kwargs)
        self.roles = tuple(roles)
        bad = set(self.roles) - set(Role.ALL)
        if bad:
            raise ValueError(f'roles {sorted(bad)} are invalid: allowed values are {Role.ALL}')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed={seed!r} is invalid: allowed values are integers')
        if isinstance(search_batches, bool) or not isinstance(search_batches, int) or search_batches < 1:
            raise ValueError(f'search_batches={search_batches!r} is invalid: allowed values are integers >= 1')
        self.seed = seed
        self.search = bool(search)
        self.search_batches = search_batches
        self.search_ranges = _grid(search_ranges, 'search_ranges', low=0.0)
        self.search_means = _grid(search_means, 'search_means')
        self.model_state_keys = self.base.model_state_keys

    # -- assignment: the base recipe's choices, with noise on the chosen inputs -----------------------------------
    def bits_for(self, site):
        return self.base.bits_for(site)

    def weight_quantizer(self, site, bits):
        return self.base.weight_quantizer(site, bits)

    def act_quantizer(self, site: QuantSite, slot, role, bits):
        cfg = self.base.act_quantizer(site, slot, role, bits)
        if cfg is None or role not in self.roles or site.kind not in ('linear', 'conv') or slot != 'input':
            return cfg
        layout = site.layout(slot)
        index = self._site_index.get(site.name, 0)
        return dict(type='noisy', quantizer=cfg, seed=self.seed + index, channel_axis=layout.channel_axis)

    def assign(self, sites):
        self._site_index = {s.name: i for i, s in enumerate(sites)}
        super().assign(sites)

    # -- calibration -------------------------------------------------------------------------------------------
    def calibrate_activations(self, sites, run_calibration):
        """The base recipe's calibration; the float inputs of the noisy layers on the first ``search_batches``
        batches are kept on the way (every calibration pass sees the float model), so the noise search needs no
        pass of its own."""
        capture = _InputCapture(self._noisy_sites(sites), self.search_batches, self.max_samples) \
            if self.search else None
        try:
            return super().calibrate_activations(sites, run_calibration)
        finally:
            self._captured = capture.close() if capture is not None else None

    def finish(self, sites, run_calibration):
        """The base recipe's own steps after calibration, then the noise search."""
        summary = dict(self.base.finish(sites, run_calibration))
        if self.search:
            summary['noise_search'] = self.search_noise(sites, run_calibration)
        summary['noisy_sites'] = sum(1 for _, _, q in iter_quantizers(sites, weights=False)
                                     if type(q).__name__ == 'NoisyQuantizer')
        return summary

    @staticmethod
    def _noisy_sites(sites) -> list[QuantSite]:
        return [s for s in sites
                if s.kind in ('linear', 'conv') and type(s.module.input_quantizer).__name__ == 'NoisyQuantizer']

    @torch.no_grad()
    def search_noise(self, sites, run_calibration) -> dict:
        """Search each noisy layer's noise on its float inputs of ``search_batches`` calibration batches (those
        kept during calibration; captured in a pass of their own when the base recipe rewrote the model after
        calibration, as RepQ-ViT's reparameterization does). Returns per-layer results and timings."""
        from ..quantizers import LayerFnError, LinearOutputError, search_noise
        noisy = self._noisy_sites(sites)
        inputs = getattr(self, '_captured', None)
        self._captured = None
        if inputs is None or self.base.model_state_keys:
            capture = _InputCapture(noisy, self.search_batches, self.max_samples)
            set_quant_enabled(sites, False)
            try:
                run_calibration()
            finally:
                set_quant_enabled(sites, True)
                inputs = capture.close()
        results = {}
        for site in tqdm(noisy, desc='NoisyQuant: noise search', unit='layer', leave=False, dynamic_ncols=True,
                         disable=not is_main_process()):
            layer, q = site.module, site.module.input_quantizer
            w_q = layer.quant_weight()
            start = time.perf_counter()
            if site.kind == 'linear':
                error = LinearOutputError(inputs[site.name], layer.weight, w_q)
            else:
                error = LayerFnError(inputs[site.name], lambda x, w=w_q, layer=layer: layer._conv_forward(x, w, None),
                                     [layer._conv_forward(x, layer.weight, None) for x in inputs[site.name]])
            res = search_noise(q, None, error, ranges=self.search_ranges, means=self.search_means)
            res['seconds'] = round(time.perf_counter() - start, 3)
            res['values'] = sum(x.numel() for x in inputs[site.name])
            results[site.name] = {k: (round(v, 8) if isinstance(v, float) else v) for k, v in res.items()}
            q.version += 1
            inputs[site.name] = []
        return results

    def describe(self):
        return dict(super().describe(), base=self.base.describe(), roles=list(self.roles), seed=self.seed,
                    search=self.search, search_batches=self.search_batches,
                    search_ranges=_listed(self.search_ranges), search_means=_listed(self.search_means))


def _grid(values, name: str, low: float | None = None) -> tuple[float, ...] | None:
    """A candidate grid checked: ``None`` or a non-empty sequence of finite numbers (``>= low`` when given)."""
    if values is None:
        return None
    allowed = f'None or a non-empty list of finite numbers{"" if low is None else f" >= {low:g}"}'
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f'{name}={values!r} is invalid: allowed values are {allowed}') from None
    if not out or not all(math.isfinite(v) and (low is None or v >= low) for v in out):
        raise ValueError(f'{name}={values!r} is invalid: allowed values are {allowed}')
    return out


def _listed(grid):
    """A checked grid as the results file lists it (``None``: the default grid)."""
    return None if grid is None else list(grid)


class _InputCapture:
    """Keeps clones of the inputs of ``sites``' modules on their first ``limit`` calls; with ``max_samples``, of a
    linear layer's input only an evenly strided subset of its tokens (rows), at most ``max_samples`` values."""

    def __init__(self, sites: list[QuantSite], limit: int, max_samples: int | None = None):
        self.inputs: dict[str, list[torch.Tensor]] = {s.name: [] for s in sites}
        self.handles = []
        for site in sites:
            most = max_samples if site.kind == 'linear' else None

            def grab(module, args, name=site.name, most=most):
                if len(self.inputs[name]) < limit:
                    self.inputs[name].append(_strided_tokens(args[0].detach(), most))
            self.handles.append(site.module.register_forward_pre_hook(grab))

    def close(self) -> dict[str, list[torch.Tensor]]:
        for h in self.handles:
            h.remove()
        return self.inputs


def _strided_tokens(x: torch.Tensor, max_values: int | None) -> torch.Tensor:
    """A copy of ``x``; with ``max_values``, only every ``k``-th of its rows (the tokens of ``[..., channels]``), for
    the smallest ``k`` that keeps at most ``max_values`` values (one row at least)."""
    if max_values is None:
        return x.clone()
    rows = x.reshape(-1, x.shape[-1])
    keep = max(1, max_values // rows.shape[1])
    step = -(-rows.shape[0] // keep)
    return rows[::step].clone()
