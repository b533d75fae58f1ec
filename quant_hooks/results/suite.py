"""A benchmark grid: models x methods x bit widths x calibration seeds x scopes, expanded into runs.

The grid is a plain dict (from a YAML file or a Python config)::

    name: tiny-classification          # labels every record (extra.suite)
    store: work_dirs/suite.sqlite      # the results store (tools/quant_suite.py --store overrides)
    work_dir: work_dirs/suite          # one sub-directory per run
    models:                            # name -> config, checkpoint (optional), cfg options (optional)
      - {name: deit_t, config: configs/classification/deit_t_imagenet_tiny_minmax_w8a8.py,
         checkpoint: null, options: {model.model_kwargs.depth: 1}}
    methods:                           # full method configs (the config's quant_method is replaced); an
      - {type: MinMax}                 # optional name labels variants of one type (extra.method_name)
      - {type: MinMax, name: minmax_token, a_granularity: per_token}
    bits: [8, [4, 8]]                  # an int means W = A; a pair is [W, A]
    seeds: [0, 1, 2]                   # calibration seeds (quant_calibration.seed)
    scopes: [backbone]                 # optional: quant_adapter.scope
    eval_float: true                   # evaluate the float model in every run (false: --no-float)
    launcher: none                     # or pytorch: every run through tools/dist_quant_test.sh
    nproc: 2                           # processes per run with launcher pytorch
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

GRID_KEYS = ('name', 'store', 'work_dir', 'models', 'methods', 'bits', 'seeds', 'scopes', 'eval_float', 'launcher',
             'nproc')
MODEL_KEYS = ('name', 'config', 'checkpoint', 'options')
LAUNCHERS = ('none', 'pytorch')


class SuiteError(ValueError):
    """The suite grid is malformed; the message names the field."""


@dataclass
class SuiteRun:
    """One run of a grid.

    Attributes:
        model: the model entry's name (stored as the record's ``model``).
        config: the model's config file.
        checkpoint: its weights, or ``None``.
        options: ``--cfg-options`` of the run (model options, method, seed, scope, labels).
        label: a unique, file-name-safe name of the run (its work sub-directory).
    """

    model: str
    config: str
    checkpoint: str | None
    options: dict = field(default_factory=dict)
    label: str = ''


def _bits(value, i) -> tuple[int, int]:
    if isinstance(value, bool):
        raise SuiteError(f'bits[{i}]={value!r} is invalid: give an int (W = A) or a pair [W, A]')
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in value):
        return int(value[0]), int(value[1])
    raise SuiteError(f'bits[{i}]={value!r} is invalid: give an int (W = A) or a pair [W, A]')


def _list(grid: dict, key: str, default=None) -> list:
    value = grid.get(key, default)
    if value is None:
        raise SuiteError(f'suite field {key!r} is missing')
    if not isinstance(value, (list, tuple)) or not value:
        raise SuiteError(f'suite field {key!r} must be a non-empty list, got {value!r:.80}')
    return list(value)


def _safe(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', str(text)).strip('-')


def check_grid(grid: dict) -> dict:
    """Validate a grid dict; returns it with defaults filled in."""
    if not isinstance(grid, dict):
        raise SuiteError(f'a suite grid must be a dict, got {type(grid).__name__}')
    bad = set(grid) - set(GRID_KEYS)
    if bad:
        raise SuiteError(f'suite fields {sorted(bad)} are invalid: allowed fields are {list(GRID_KEYS)}')
    out = dict(grid)
    out.setdefault('name', 'suite')
    out['models'] = _list(grid, 'models')
    for i, m in enumerate(out['models']):
        if not isinstance(m, dict) or 'name' not in m or 'config' not in m:
            raise SuiteError(f'models[{i}] must be a dict with at least name and config, got {m!r:.80}')
        extra = set(m) - set(MODEL_KEYS)
        if extra:
            raise SuiteError(f'models[{i}] fields {sorted(extra)} are invalid: allowed fields are {list(MODEL_KEYS)}')
        if not isinstance(m.get('options') or {}, dict):
            raise SuiteError(f'models[{i}].options must be a dict of config key -> value')
    names = [m['name'] for m in out['models']]
    if len(set(names)) != len(names):
        raise SuiteError(f'models: names must be unique, got {names}')
    out['methods'] = _list(grid, 'methods')
    for i, m in enumerate(out['methods']):
        if not isinstance(m, dict) or 'type' not in m:
            raise SuiteError(f'methods[{i}] must be a method config dict with a type, got {m!r:.80}')
        if 'w_bits' in m or 'a_bits' in m:
            raise SuiteError(f'methods[{i}] sets w_bits / a_bits: give bit widths in the suite field bits')
    out['bits'] = [_bits(b, i) for i, b in enumerate(_list(grid, 'bits'))]
    out['seeds'] = _list(grid, 'seeds', [0])
    for i, s in enumerate(out['seeds']):
        if isinstance(s, bool) or not isinstance(s, int):
            raise SuiteError(f'seeds[{i}]={s!r} is invalid: seeds are integers')
    out['scopes'] = _list(grid, 'scopes', [None])
    out['eval_float'] = bool(grid.get('eval_float', True))
    out['launcher'] = grid.get('launcher', 'none')
    if out['launcher'] not in LAUNCHERS:
        raise SuiteError(f'suite field launcher={out["launcher"]!r} is invalid: allowed values are {list(LAUNCHERS)}')
    out['nproc'] = int(grid.get('nproc', 1))
    if out['nproc'] < 1:
        raise SuiteError(f'suite field nproc={out["nproc"]} is invalid: allowed values are >= 1')
    return out


def expand_grid(grid: dict) -> list[SuiteRun]:
    """The runs of a grid, in order models > methods > bits > scopes > seeds."""
    grid = check_grid(grid)
    runs = []
    for model, method, (w, a), scope, seed in itertools.product(grid['models'], grid['methods'], grid['bits'],
                                                                grid['scopes'], grid['seeds']):
        options = dict(model.get('options') or {})
        method = dict(method)
        method_name = method.pop('name', None)
        options['quant_method'] = dict(method, w_bits=w, a_bits=a)
        options['quant_calibration.seed'] = seed
        if scope is not None:
            options['quant_adapter.scope'] = scope
        options['model_name'] = model['name']
        options['results_extra'] = dict(suite=grid['name'])
        if method_name:
            options['results_extra']['method_name'] = method_name
        parts = [model['name'], method_name or method['type'], f'w{w}a{a}', *([scope] if scope else []), f'seed{seed}']
        runs.append(SuiteRun(model=model['name'], config=model['config'], checkpoint=model.get('checkpoint'),
                             options=options, label=_safe('_'.join(map(str, parts)))))
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise SuiteError(f'the grid has repeated runs {dup[:3]}: give distinct methods (an identical method twice?)')
    return runs
