"""The reconstruction engine: unit by unit, in network order, learn AdaRound rounding and activation scales so
that the quantized unit reproduces the float unit (BRECQ / QDrop / ADFQ-ViT module-wise optimization).

For each unit the calibration images run through the model twice: once quantized (every upstream unit already
reconstructed) to record the unit's inputs, once in floating point to record its float inputs, outputs and the
tensors the extra loss terms tap. Those records go to a :class:`RecordCache` (memory within a budget, then disk),
so an iteration runs the unit alone: one forward and one backward, no upstream model.
"""
from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ..quantizers import AdaRoundQuantizer, UniformQuantizer, beta_schedule
from ..sites import QuantSite, Role
from .cache import RecordCache
from .capture import StopForward, capture_unit
from .losses import LossTerm, Tap, build_loss_term, output_mse
from .units import UNIT_LEVELS, ReconUnit, find_units

A_LR_SCHEDULES = ('cosine', 'constant')


@dataclass
class ReconstructionConfig:
    """Settings of :func:`reconstruct` (a recipe's ``reconstruction=dict(...)``).

    Args:
        unit: ``module`` (attention / MLP modules separately) or ``block`` (transformer blocks), see
            :func:`~quant_hooks.reconstruction.units.find_units`.
        group_tag: sites tagged with this prefix join their units into one (``'bridge_'``: Q-HyViT's bridges).
        units: explicit unit module names (overrides ``unit`` / ``group_tag``).
        iters: optimisation steps per unit.
        w_lr: Adam learning rate of the AdaRound variables.
        a_lr: Adam learning rate of the activation scales (0 or ``learn_act_scale=False``: scales stay fixed).
        a_lr_schedule: ``cosine`` (to 0 over ``iters``) or ``constant``.
        learn_act_scale: learn the static scales of the unit's uniform activation quantizers (straight-through).
        reg_weight: weight of AdaRound's rounding regulariser.
        beta: (start, end) of the annealed β.
        warmup: fraction of the steps without regulariser (β stays at its start, then decays linearly).
        qdrop_prob: probability that an input element takes its value from the quantized upstream model
            (otherwise the float one): QDrop's 0.5; 1.0 is BRECQ (quantized inputs only).
        seed: seeds batch order and QDrop masks (unit ``i`` uses ``seed + i``).
        cache_mb: memory budget of the unit records in MiB; beyond it records spill to disk.
        spill_dir: parent directory of the spill files (default: the system temp dir).
        loss_terms: extra loss terms, e.g. ``[dict(type='AttentionKL', temperature=4, lam=0.1, dim=-1)]``.
        progress: show a progress bar per unit.
        eval_error: record each unit's output error against float on the calibration records before and after.
        keep_better: with ``eval_error``, undo a unit's reconstruction (back to nearest rounding and its calibrated
            scales) when it raised that error (short schedules can end with a hard rounding worse than nearest);
            the unit's record says ``reverted``. Not in the papers, which keep every result: ``False`` for that.
    """

    unit: str = 'block'
    group_tag: str | None = None
    units: Sequence[str] | None = None
    iters: int = 20000
    w_lr: float = 1e-3
    a_lr: float = 4e-5
    a_lr_schedule: str = 'cosine'
    learn_act_scale: bool = True
    reg_weight: float = 0.01
    beta: tuple = (20.0, 2.0)
    warmup: float = 0.2
    qdrop_prob: float = 0.5
    seed: int = 1005
    cache_mb: float = 2048.0
    spill_dir: str | None = None
    loss_terms: Sequence = field(default_factory=list)
    progress: bool = True
    eval_error: bool = True
    keep_better: bool = True

    def __post_init__(self):
        if self.unit not in UNIT_LEVELS:
            raise ValueError(f'reconstruction.unit={self.unit!r} is invalid: allowed values are {list(UNIT_LEVELS)}')
        if self.a_lr_schedule not in A_LR_SCHEDULES:
            raise ValueError(f'reconstruction.a_lr_schedule={self.a_lr_schedule!r} is invalid: allowed values are '
                             f'{list(A_LR_SCHEDULES)}')
        checks = dict(iters=self.iters >= 1, w_lr=self.w_lr >= 0, a_lr=self.a_lr >= 0, reg_weight=self.reg_weight >= 0,
                      warmup=0 <= self.warmup < 1, qdrop_prob=0 <= self.qdrop_prob <= 1, cache_mb=self.cache_mb >= 0)
        rules = dict(iters='>= 1', w_lr='>= 0', a_lr='>= 0', reg_weight='>= 0', warmup='in [0, 1)',
                     qdrop_prob='in [0, 1]', cache_mb='>= 0')
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f'reconstruction.{key}={getattr(self, key)!r} is invalid: allowed values are '
                                 f'{rules[key]}')
        if len(tuple(self.beta)) != 2 or min(self.beta) <= 0:
            raise ValueError(f'reconstruction.beta={self.beta!r} is invalid: allowed values are (start, end), both > 0')
        self.beta = tuple(float(b) for b in self.beta)
        self.iters = int(self.iters)
        self.units = None if self.units is None else list(self.units)
        self.terms: list[LossTerm] = [build_loss_term(t) for t in self.loss_terms]

    def describe(self) -> dict:
        d = asdict(self)
        d.pop('terms', None)
        d['loss_terms'] = [t.describe() for t in self.terms]
        d['beta'] = list(self.beta)
        return d


def _quantizers(sites: Sequence[QuantSite]):
    for s in sites:
        for slot, q in s.quantizers().items():
            if q is not None:
                yield s, slot, q


def _learnables(unit: ReconUnit, learn_act: bool):
    """(AdaRound weight quantizers, activation quantizers whose scale is learned) of the unit."""
    rounding, scaled = [], []
    for site, slot, q in _quantizers(unit.sites):
        if not q.enabled:
            continue
        if site.roles.get(slot) == Role.WEIGHT:
            if isinstance(q, AdaRoundQuantizer) and q.calibrated and q.alpha.numel():
                rounding.append(q)
        elif learn_act and isinstance(q, UniformQuantizer) and not isinstance(q, AdaRoundQuantizer) \
                and q.requires_calibration and q.calibrated and q.scale.numel() and q.scale.is_floating_point():
            scaled.append(q)
    return rounding, scaled


def _mix(q_obj, f_obj, prob: float, gen: torch.Generator):
    """QDrop: each element of each floating tensor from ``q_obj`` with probability ``prob``, else from ``f_obj``."""
    if isinstance(q_obj, torch.Tensor):
        if not q_obj.is_floating_point() or not isinstance(f_obj, torch.Tensor) or f_obj.shape != q_obj.shape:
            return q_obj
        keep = torch.rand(q_obj.shape, generator=gen) < prob
        return torch.where(keep.to(q_obj.device), q_obj, f_obj)
    if isinstance(q_obj, (tuple, list)):
        return type(q_obj)(_mix(a, b, prob, gen) for a, b in zip(q_obj, f_obj))
    if isinstance(q_obj, dict):
        return {k: _mix(v, f_obj.get(k), prob, gen) for k, v in q_obj.items()}
    return q_obj


class _TapRecorder:
    """Forward pre-hooks recording tapped arguments (with their autograd graph) during a unit forward."""

    def __init__(self, taps: Sequence[Tap]):
        self.values: dict[int, torch.Tensor] = {}
        self.handles = [t.module.register_forward_pre_hook(self._hook(i, t.arg)) for i, t in enumerate(taps)]
        self.n = len(taps)

    def _hook(self, i, arg):
        def hook(module, args):
            self.values.setdefault(i, args[arg])
        return hook

    def take(self) -> list:
        out = [self.values.get(i) for i in range(self.n)]
        self.values = {}
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Reconstructor:
    """Runs :func:`reconstruct`; kept as a class so the pieces can be tested and timed separately.

    Args:
        model: the model holding ``sites`` (quantizers assigned and calibrated).
        sites: its quantization sites in network order.
        run_calibration: runs the calibration images through ``model`` (catching :class:`StopForward` per batch,
            as :func:`quant_hooks.adapters.base.run_batches` does; otherwise the capture falls back to full passes).
        cfg: the settings.
    """

    def __init__(self, model: nn.Module, sites: Sequence[QuantSite], run_calibration: Callable[[], int],
                 cfg: ReconstructionConfig):
        self.model = model
        self.sites = list(sites)
        self.run_calibration = run_calibration
        self.cfg = cfg
        self.units = find_units(model, self.sites, cfg.unit, cfg.group_tag, cfg.units)
        self.stop_early = True

    # -- capture ----------------------------------------------------------------------------------------------
    def _disable_all(self) -> list:
        """Switch every quantizer off; returns (quantizer, previous flag) pairs to restore."""
        before = [(q, q.enabled) for _, _, q in _quantizers(self.sites)]
        for q, _ in before:
            q.enabled = False
        return before

    def _capture(self, unit: ReconUnit, cache: RecordCache, tag: str, outputs: bool, taps) -> int:
        while True:
            try:
                return capture_unit(unit.modules, self.run_calibration, cache, tag, outputs, taps, self.stop_early)
            except StopForward:  # the calibration loop does not catch it: record whole passes instead
                if not self.stop_early:
                    raise
                self.stop_early = False
                cache.drop(tag)

    def capture(self, unit: ReconUnit, cache: RecordCache, taps) -> int:
        """Record quantized-upstream inputs (``q``) and float inputs / outputs / taps (``fp``) of ``unit``."""
        n_q = n_fp = None
        if self.cfg.qdrop_prob > 0:
            n_q = self._capture(unit, cache, 'q', False, ())
        flags = self._disable_all()
        try:
            n_fp = self._capture(unit, cache, 'fp', True, taps)
        finally:
            for q, enabled in flags:
                q.enabled = enabled
        if n_q is not None and n_q != n_fp:
            raise RuntimeError(f'unit {unit.name}: the quantized pass reached it {n_q} times, the float pass {n_fp} '
                               'times; the calibration forward must be deterministic')
        if n_fp == 0:
            raise RuntimeError(f'unit {unit.name} is never reached by the calibration forward')
        return n_fp

    # -- optimisation -----------------------------------------------------------------------------------------
    def _inputs(self, cache: RecordCache, k: int, gen: torch.Generator | None, prob: float):
        fp = cache.get(('fp', k))
        if prob <= 0:
            return fp['args'], fp['kwargs'], fp
        q = cache.get(('q', k))
        if prob >= 1 or gen is None:
            return q['args'], q['kwargs'], fp
        args = _mix(q['args'], fp['args'], prob, gen)
        kwargs = _mix(q['kwargs'], fp['kwargs'], prob, gen)
        return args, kwargs, fp

    @torch.no_grad()
    def output_error(self, unit: ReconUnit, cache: RecordCache, n: int) -> float:
        """Mean output error of the quantized unit on quantized-upstream inputs against the float outputs."""
        total = 0.0
        for k in range(n):
            args, kwargs, fp = self._inputs(cache, k, None, 1.0 if self.cfg.qdrop_prob > 0 else 0.0)
            total += float(output_mse(unit.forward(args, kwargs), fp['out']))
        return total / n

    @torch.enable_grad()
    def optimise(self, unit: ReconUnit, cache: RecordCache, n: int, index: int, taps, terms) -> dict:
        """``cfg.iters`` steps on the unit alone; leaves AdaRound in hard mode and the learned scales frozen."""
        cfg = self.cfg
        rounding, scaled = _learnables(unit, cfg.learn_act_scale and cfg.a_lr > 0)
        gen = torch.Generator().manual_seed(cfg.seed + index)
        for q in rounding:
            q.set_mode('soft')
            q.alpha.requires_grad_(True)
        scales = []
        for q in scaled:
            q.scale = q.scale.detach().clone().requires_grad_(True)
            scales.append(q.scale)
        w_opt = torch.optim.Adam([q.alpha for q in rounding], lr=cfg.w_lr) if rounding else None
        a_opt = torch.optim.Adam(scales, lr=cfg.a_lr) if scales else None
        a_sched = torch.optim.lr_scheduler.CosineAnnealingLR(a_opt, T_max=cfg.iters, eta_min=0.0) \
            if a_opt is not None and cfg.a_lr_schedule == 'cosine' else None
        recorder = _TapRecorder(taps)
        losses = []
        bar = tqdm(total=cfg.iters, desc=f'reconstruct {unit.name}', disable=not cfg.progress, leave=False,
                   mininterval=1.0)
        begin_reg = cfg.warmup * cfg.iters
        try:
            for it in range(cfg.iters):
                k = int(torch.randint(n, (1, ), generator=gen))
                args, kwargs, fp = self._inputs(cache, k, gen, cfg.qdrop_prob)
                out = unit.forward(args, kwargs)
                loss = output_mse(out, fp['out'])
                tapped = recorder.take()
                for term, idx in terms:
                    loss = loss + term([tapped[i] for i in idx], [fp['taps'][i] for i in idx])
                rec = float(loss.detach())
                if rounding and it >= begin_reg and cfg.reg_weight > 0:
                    beta = beta_schedule(it, cfg.iters, cfg.beta[0], cfg.beta[1], cfg.warmup)
                    loss = loss + cfg.reg_weight * sum(q.regularization(beta) for q in rounding)
                for opt in (w_opt, a_opt):
                    if opt is not None:
                        opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in (w_opt, a_opt):
                    if opt is not None:
                        opt.step()
                if a_sched is not None:
                    a_sched.step()
                if scales:
                    with torch.no_grad():
                        for s in scales:
                            s.clamp_(min=1e-8)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f'unit {unit.name}: the reconstruction loss became {value} at step {it}')
                losses.append(rec)
                bar.update(1)
                if it % 50 == 0 or it == cfg.iters - 1:
                    bar.set_postfix(loss=f'{value:.4g}', rec=f'{rec:.4g}', refresh=False)
        finally:
            bar.close()
            recorder.remove()
            for q in rounding:
                q.alpha.requires_grad_(False)
                q.set_mode('hard')
            for q in scaled:
                q.scale = q.scale.detach()
                q.version += 1
        head = losses[:max(1, len(losses) // 10)]
        tail = losses[-max(1, len(losses) // 10):]
        return dict(rounding_quantizers=len(rounding), learned_scales=len(scales),
                    rec_loss_first=sum(head) / len(head), rec_loss_last=sum(tail) / len(tail))

    # -- driver -----------------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        params = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in params:
            p.requires_grad_(False)
        records, peak_cache = [], 0
        start = time.perf_counter()
        try:
            for index, unit in enumerate(self.units):
                records.append(self.run_unit(unit, index))
                peak_cache = max(peak_cache, records[-1]['cache_peak_bytes'])
        finally:
            for p, flag in params:
                p.requires_grad_(flag)
        summary = dict(schedule=dict(cfg.describe(), num_units=len(self.units)), units=records,
                       seconds=round(time.perf_counter() - start, 3), cache_peak_bytes=peak_cache,
                       peak_rss_mb=round(_peak_rss_mb(), 1))
        if torch.cuda.is_available():
            summary['cuda_peak_mb'] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return summary

    def run_unit(self, unit: ReconUnit, index: int) -> dict:
        cfg = self.cfg
        rounding, scaled = _learnables(unit, cfg.learn_act_scale and cfg.a_lr > 0)
        record = dict(name=unit.name, kind=unit.kind, modules=unit.module_names, num_sites=len(unit.sites))
        if not rounding and not scaled:
            return dict(record, skipped='nothing to learn', cache_peak_bytes=0)
        terms, taps = [], []
        for term in cfg.terms:
            t = term.taps(unit.sites)
            if t:
                terms.append((term, list(range(len(taps), len(taps) + len(t)))))
                taps += t
        explicit = [m for mod in unit.modules for m in mod.modules() if hasattr(m, 'force_explicit')]
        for m in explicit:
            m.force_explicit = True
        cache = RecordCache(int(cfg.cache_mb * 2**20), cfg.spill_dir)
        t0 = time.perf_counter()
        try:
            n = self.capture(unit, cache, taps)
            t1 = time.perf_counter()
            before = self.output_error(unit, cache, n) if cfg.eval_error else None
            snapshot = _snapshot(unit, cfg.learn_act_scale and cfg.a_lr > 0)
            stats = self.optimise(unit, cache, n, index, taps, terms)
            t2 = time.perf_counter()
            after = self.output_error(unit, cache, n) if cfg.eval_error else None
            reverted = bool(cfg.eval_error and cfg.keep_better and after > before)
            if reverted:
                _restore(snapshot)
        finally:
            for m in explicit:
                m.force_explicit = False
            cache.clear()
        record.update(stats, records=n, iters=cfg.iters, loss_terms=[t.registry_name for t, _ in terms],
                      capture_seconds=round(t1 - t0, 3), seconds=round(t2 - t1, 3),
                      seconds_per_iter=round((t2 - t1) / cfg.iters, 6), cache_peak_bytes=cache.peak_bytes,
                      spilled_records=cache.spilled_records, spilled_bytes=cache.spilled_bytes)
        if cfg.eval_error:
            record.update(error_before=before, error_after=after, reverted=reverted)
        return record


def _snapshot(unit: ReconUnit, learn_act: bool) -> list:
    """What :meth:`Reconstructor.optimise` changes in a unit: rounding variables and mode, learned scales."""
    rounding, scaled = _learnables(unit, learn_act)
    return [(q, q.alpha.detach().clone(), q.mode, None) for q in rounding] + \
        [(q, None, None, q.scale.detach().clone()) for q in scaled]


def _restore(snapshot: list) -> None:
    with torch.no_grad():
        for q, alpha, mode, scale in snapshot:
            if alpha is not None:
                q.alpha.copy_(alpha)
                q.set_mode(mode)
            else:
                q.scale = scale
                q.version += 1


def reconstruct(model: nn.Module, sites: Sequence[QuantSite], run_calibration: Callable[[], int],
                cfg: ReconstructionConfig | dict) -> dict:
    """Reconstruct every unit of ``model`` in network order; returns the summary for the results file.

    Returns:
        ``dict(schedule=..., units=[per-unit record], seconds, cache_peak_bytes, peak_rss_mb)``; a unit record
        holds its name, kind, number of records and iterations, wall times, loss at the start and the end, the
        cache's peak and spilled bytes, and (``eval_error``) its output error against float before and after.
    """
    if isinstance(cfg, dict):
        cfg = ReconstructionConfig(**cfg)
    return Reconstructor(model, sites, run_calibration, cfg).run()
