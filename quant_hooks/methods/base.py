"""Method recipes: which quantizer each site gets, how it is calibrated, and what happens after."""
from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable, Iterator

from torch import nn

from ..layout import resolve_granularity
from ..quantizers import (EmptyCalibrationError, Quantizer, build_quantizer, check_bits, check_max_samples,
                          get_quantizer_class, run_calibration_passes)
from ..reconstruction import ReconstructionConfig, reconstruct
from ..sites import QuantSite, Role
from .early_exit import EarlyExitPasses

#: config keys holding a nested quantizer config (its granularity is resolved against the same slot)
NESTED_QUANTIZER_KEYS = ('quantizer', 'logit_quantizer')


def resolve_config(cfg, site: QuantSite, slot: str):
    """A quantizer config whose ``granularity`` meanings (``per_token``, ``per_channel``, ``per_head`` ...) are
    made concrete for ``slot`` of ``site`` from the slot's declared layout (nested quantizer configs too)."""
    if not isinstance(cfg, dict):
        return cfg
    out = dict(cfg)
    if 'granularity' in out:
        out['granularity'] = resolve_granularity(out['granularity'], site.layout(slot), f'{site.name}:{slot}')
    for key in NESTED_QUANTIZER_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = resolve_config(out[key], site, slot)
    return out


def with_max_samples(cfg, max_samples: int | None):
    """``cfg`` with ``max_samples`` set where its quantizer type takes that argument, nested quantizer configs too;
    a value the config already gives is kept. ``None`` (or a quantizer instance) leaves it unchanged."""
    if max_samples is None or not isinstance(cfg, dict):
        return cfg
    out = dict(cfg)
    if 'type' in out and 'max_samples' in inspect.signature(get_quantizer_class(out['type'])).parameters:
        out.setdefault('max_samples', max_samples)
    for key in NESTED_QUANTIZER_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = with_max_samples(out[key], max_samples)
    return out


def iter_quantizers(sites: Iterable[QuantSite], weights: bool | None = None) -> Iterator[tuple[QuantSite, str,
                                                                                                Quantizer]]:
    """(site, slot, quantizer) for every installed quantizer; ``weights`` selects weight / activation ones."""
    for site in sites:
        for slot, q in site.quantizers().items():
            if q is None:
                continue
            is_weight = site.roles.get(slot) == Role.WEIGHT
            if weights is None or weights == is_weight:
                yield site, slot, q


def set_quant_enabled(sites: Iterable[QuantSite], enabled: bool) -> None:
    """Switch fake quantization on or off everywhere (off: the model computes exactly the float result)."""
    for _, _, q in iter_quantizers(sites):
        q.enabled = enabled


class PTQMethod:
    """Base recipe.

    Args:
        w_bits: weight bit width in [2, 16].
        a_bits: activation bit width in [2, 16].
        overrides: per-site bit widths, applied in order, each ``dict(names=[globs], tags=[tags], w_bits=...,
            a_bits=...)``; a site matches if its name matches a glob or it has one of the tags. Example: keep
            the first layer at 8 bits with ``dict(tags=['first'], w_bits=8, a_bits=8)``.
        float_roles: roles left in floating point (e.g. ``['post_softmax']``).
        only: quantize only a subset, the rest stays in floating point: ``dict(roles=[roles], blocks=[globs])``;
            a tensor is quantized if its role is in ``roles`` (when given) and its site's ``block`` (or name)
            matches a glob or lies inside a listed block (when given). Used by ``tools/sensitivity.py``.
        reconstruction: learned reconstruction after calibration, any recipe: ``dict(unit='block', iters=...)``
            (see :class:`~quant_hooks.reconstruction.ReconstructionConfig`) over the recipe's
            ``reconstruction_defaults`` (``True`` or ``dict()``: those defaults); ``None``: the recipe's default
            (``reconstruct_by_default``); ``False``: none. With it, uniform weight quantizers are installed as
            AdaRound quantizers (identical until reconstruction learns their rounding).
    """

    #: the recipe's reconstruction schedule, under the settings a config gives in ``reconstruction``
    reconstruction_defaults: dict = {}
    #: reconstruct even when the config gives no ``reconstruction`` (``reconstruction=False`` turns it off)
    reconstruct_by_default: bool = False

    def __init__(self, w_bits: int = 8, a_bits: int = 8, overrides: Iterable[dict] = (),
                 float_roles: Iterable[str] = (), only: dict | None = None,
                 reconstruction: dict | bool | None = None, max_samples: int | None = None):
        self.w_bits = check_bits(w_bits, 'w_bits')
        self.a_bits = check_bits(a_bits, 'a_bits')
        self.overrides = [dict(o) for o in overrides]
        for o in self.overrides:
            bad = set(o) - {'names', 'tags', 'w_bits', 'a_bits'}
            if bad:
                raise ValueError(f'override keys {sorted(bad)} are invalid: allowed keys are '
                                 "['names', 'tags', 'w_bits', 'a_bits']")
            for key in ('w_bits', 'a_bits'):
                if key in o:
                    check_bits(o[key], f'overrides.{key}')
        self.float_roles = tuple(float_roles)
        try:
            self.max_samples = check_max_samples(max_samples)
        except ValueError as e:  # a method setting, not a quantizer's: reported as the config's error
            raise ValueError(str(e)) from None
        #: entries of the model's state dict this method rewrote (saved with the quantizer state)
        self.model_state_keys: list[str] = []
        #: passes over the calibration set the last ``calibrate_activations`` ran
        self.calibration_passes = 0
        bad_roles = set(self.float_roles) - set(Role.ALL)
        if bad_roles:
            raise ValueError(f'float_roles {sorted(bad_roles)} are invalid: allowed values are {Role.ALL}')
        self.only = self._check_only(only)
        self.reconstruction = self._reconstruction_config(reconstruction)

    def _reconstruction_config(self, given) -> ReconstructionConfig | None:
        if given is False or (given is None and not self.reconstruct_by_default):
            return None
        if given is not None and given is not True and not isinstance(given, dict):
            raise ValueError(f'reconstruction={given!r} is invalid: allowed values are None, False, True or a dict '
                             'of ReconstructionConfig settings')
        given = given if isinstance(given, dict) else {}
        return ReconstructionConfig(**dict(self.reconstruction_defaults, **given))

    @staticmethod
    def _check_only(only: dict | None) -> dict | None:
        if not only:
            return None
        if not isinstance(only, dict) or set(only) - {'roles', 'blocks'}:
            raise ValueError(f'only={only!r} is invalid: give a dict with the keys roles and/or blocks')
        out = {k: [only[k]] if isinstance(only[k], str) else list(only[k]) for k in ('roles', 'blocks') if k in only}
        bad = set(out.get('roles', ())) - set(Role.ALL)
        if bad:
            raise ValueError(f'only.roles {sorted(bad)} are invalid: allowed values are {Role.ALL}')
        return out

    def selects(self, site: QuantSite, role: str) -> bool:
        """Whether ``only`` (if set) keeps the tensor of ``role`` at ``site`` quantized."""
        if self.only is None:
            return True
        if 'roles' in self.only and role not in self.only['roles']:
            return False
        if 'blocks' in self.only:
            unit = site.block or site.name
            return any(fnmatch.fnmatch(unit, g) or unit.startswith(g + '.') or site.name.startswith(g + '.')
                       for g in self.only['blocks'])
        return True

    # -- assignment -----------------------------------------------------------------------------------------
    def bits_for(self, site: QuantSite) -> tuple[int, int]:
        w_bits, a_bits = self.w_bits, self.a_bits
        for o in self.overrides:
            names = o.get('names', ())
            names = [names] if isinstance(names, str) else names
            if any(fnmatch.fnmatch(site.name, g) for g in names) or site.tags & set(o.get('tags', ())):
                w_bits, a_bits = o.get('w_bits', w_bits), o.get('a_bits', a_bits)
        return w_bits, a_bits

    def weight_quantizer(self, site: QuantSite, bits: int) -> dict | Quantizer | None:
        """The weight quantizer of ``site`` (a config or instance; ``None`` leaves the weight in float).
        Granularities are given by meaning (``per_channel`` = per output channel) and resolved per slot."""
        raise NotImplementedError

    def act_quantizer(self, site: QuantSite, slot: str, role: str, bits: int) -> dict | Quantizer | None:
        """The quantizer of an activation slot (``None``: float), granularity by meaning as above."""
        raise NotImplementedError

    def assign(self, sites: list[QuantSite]) -> None:
        """Install fresh quantizers on every site."""
        for site in sites:
            w_bits, a_bits = self.bits_for(site)
            built = {}
            for slot, role in site.roles.items():
                if role in self.float_roles or not self.selects(site, role):
                    built[slot] = None
                elif role == Role.WEIGHT:
                    spec = self._learnable_weight(self.weight_quantizer(site, w_bits))
                    built[slot] = build_quantizer(resolve_config(spec, site, slot))
                else:
                    cfg = with_max_samples(self.act_quantizer(site, slot, role, a_bits), self.max_samples)
                    built[slot] = build_quantizer(resolve_config(cfg, site, slot))
            for q in built.values():  # learnable parts (AdaRound's rounding) start frozen: reconstruction thaws them
                for p in q.parameters() if isinstance(q, nn.Module) else ():
                    p.requires_grad_(False)
            site.module.set_quantizers(**{self._kwarg(site, slot): q for slot, q in built.items()})

    def _learnable_weight(self, spec):
        """With reconstruction on, a uniform weight quantizer config becomes AdaRound (same range, same result
        until its rounding is learned)."""
        if self.reconstruction is not None and isinstance(spec, dict) and spec.get('type') == 'uniform':
            return dict(spec, type='adaround')
        return spec

    @staticmethod
    def _kwarg(site, slot):
        if site.kind == 'act':
            return 'quantizer'
        return {'input': 'input_quantizer', 'weight': 'weight_quantizer', 'a': 'a_quantizer',
                'b': 'b_quantizer'}[slot]

    # -- calibration ----------------------------------------------------------------------------------------
    def calibrate_weights(self, sites: list[QuantSite]) -> None:
        """Calibrate every weight quantizer on its weight (as many passes as its search needs)."""
        for site, _, q in iter_quantizers(sites, weights=True):
            weight = site.module.weight
            run_calibration_passes([q], lambda q=q, weight=weight: (q(weight), 1)[1])

    def calibrate_activations(self, sites: list[QuantSite], run_calibration: Callable[[], int]) -> int:
        """Observe activations on the float model (weights unquantized), then freeze.

        ``run_calibration`` runs the calibration set once; it is called again while a quantizer's search needs
        another pass over the same data (exact searches score their candidates in a second pass). Inside a loop
        that catches ``StopForward`` (``run_batches``), a later pass ends each batch's forward after the last
        quantizer still calibrating (:class:`~quant_hooks.methods.early_exit.EarlyExitPasses`).
        """
        weight_qs = [q for _, _, q in iter_quantizers(sites, weights=True)]
        act_qs = [q for _, _, q in iter_quantizers(sites, weights=False)]
        for q in weight_qs:
            q.enabled = False
        try:
            n, self.calibration_passes = run_calibration_passes(act_qs, EarlyExitPasses(act_qs, run_calibration))
        finally:
            for q in weight_qs:
                q.enabled = True
        if n == 0:
            raise EmptyCalibrationError('the calibration set produced no batch: give at least one image '
                                        '(calibration.num_images >= 1)')
        return n

    def search_summary(self, sites: list[QuantSite]) -> dict:
        """How the quantizers' searches ran, for the results file: per quantizer type and range method, how many
        scored every value (``exact``) or a sample (``sampled``)."""
        out: dict = {}
        for _, _, q in iter_quantizers(sites):
            info = q.describe()
            inner = info.get('inner') or info.get('logits') or info
            key = f'{info["type"]}/{inner.get("range_method", "-")}'
            kind = 'exact' if inner.get('exact', True) else 'sampled'
            out.setdefault(key, dict(exact=0, sampled=0))[kind] += 1
        return out

    def quantize(self, sites: list[QuantSite], run_calibration: Callable[[], int]) -> dict:
        """Assign, calibrate and finish; returns a summary for the results file."""
        self.assign(sites)
        self.calibrate_weights(sites)
        n = self.calibrate_activations(sites, run_calibration)
        summary = dict(calibration_batches=n, calibration_passes=self.calibration_passes,
                       quantizer_searches=self.search_summary(sites))
        return dict(summary, **self.finish(sites, run_calibration))

    def finish(self, sites: list[QuantSite], run_calibration: Callable[[], int]) -> dict:
        """Steps after calibration (reparameterization, searches); returns facts for the results file."""
        return {}

    def run(self, model: nn.Module, sites: list[QuantSite], run_calibration: Callable[[], int]) -> dict:
        """What the hook calls: :meth:`quantize`, then reconstruction when configured (one place for every
        recipe); returns the summary for the results file (``reconstruction``: schedule, per-unit times, errors
        and peak memory)."""
        summary = dict(self.quantize(sites, run_calibration))
        if self.reconstruction is not None:
            summary['reconstruction'] = reconstruct(model, sites, run_calibration, self.reconstruction)
        return summary

    def describe(self) -> dict:
        out = dict(type=type(self).__name__, w_bits=self.w_bits, a_bits=self.a_bits, overrides=self.overrides,
                   float_roles=list(self.float_roles))
        if self.only is not None:
            out['only'] = self.only
        if self.reconstruction is not None:
            out['reconstruction'] = self.reconstruction.describe()
        if self.max_samples is not None:
            out['max_samples'] = self.max_samples
        return out
