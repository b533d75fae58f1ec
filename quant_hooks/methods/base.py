"""Method recipes: which quantizer each site gets, how it is calibrated, and what happens after."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator

from ..quantizers import EmptyCalibrationError, Quantizer, build_quantizer, check_bits
from ..sites import QuantSite, Role


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
    """

    def __init__(self, w_bits: int = 8, a_bits: int = 8, overrides: Iterable[dict] = (),
                 float_roles: Iterable[str] = (), only: dict | None = None):
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
        bad_roles = set(self.float_roles) - set(Role.ALL)
        if bad_roles:
            raise ValueError(f'float_roles {sorted(bad_roles)} are invalid: allowed values are {Role.ALL}')
        self.only = self._check_only(only)

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
        raise NotImplementedError

    def act_quantizer(self, site: QuantSite, slot: str, role: str, bits: int) -> dict | Quantizer | None:
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
                    built[slot] = build_quantizer(self.weight_quantizer(site, w_bits))
                else:
                    built[slot] = build_quantizer(self.act_quantizer(site, slot, role, a_bits))
            site.module.set_quantizers(**{self._kwarg(site, slot): q for slot, q in built.items()})

    @staticmethod
    def _kwarg(site, slot):
        if site.kind == 'act':
            return 'quantizer'
        return {'input': 'input_quantizer', 'weight': 'weight_quantizer', 'a': 'a_quantizer',
                'b': 'b_quantizer'}[slot]

    # -- calibration ----------------------------------------------------------------------------------------
    def calibrate_weights(self, sites: list[QuantSite]) -> None:
        for site, _, q in iter_quantizers(sites, weights=True):
            q.reset()
            q.observing = True
            q(site.module.weight)
            q.freeze()

    def calibrate_activations(self, sites: list[QuantSite], run_calibration: Callable[[], int]) -> int:
        """Observe activations on the float model (weights unquantized), then freeze."""
        weight_qs = [q for _, _, q in iter_quantizers(sites, weights=True)]
        act_qs = [q for _, _, q in iter_quantizers(sites, weights=False)]
        for q in weight_qs:
            q.enabled = False
        for q in act_qs:
            q.reset()
            q.observing = True
        try:
            n = run_calibration()
        finally:
            for q in act_qs:
                q.observing = False
            for q in weight_qs:
                q.enabled = True
        if n == 0:
            raise EmptyCalibrationError('the calibration set produced no batch: give at least one image '
                                        '(calibration.num_images >= 1)')
        for q in act_qs:
            q.freeze()
        return n

    def quantize(self, sites: list[QuantSite], run_calibration: Callable[[], int]) -> dict:
        """Assign, calibrate and finish; returns a summary for the results file."""
        self.assign(sites)
        self.calibrate_weights(sites)
        n = self.calibrate_activations(sites, run_calibration)
        return dict(calibration_batches=n)

    def describe(self) -> dict:
        out = dict(type=type(self).__name__, w_bits=self.w_bits, a_bits=self.a_bits, overrides=self.overrides,
                   float_roles=list(self.float_roles))
        if self.only is not None:
            out['only'] = self.only
        return out
