"""The mmengine hook that quantizes a model after its checkpoint is loaded and before the test loop."""
from __future__ import annotations

import copy
import itertools
import os.path as osp
import time

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope
from mmengine.model import is_model_wrapper
from tqdm import tqdm

from ..adapters import run_batches
from ..calibration import build_calibration_loader
from ..evaluation import write_json_atomic
from ..evaluation.feature_fidelity import PHASE_KEY
from ..registry import HOOKS, MODEL_ADAPTERS, QUANT_METHODS, build_setting
from ..sites import count_kinds, count_roles
from ..state import broadcast_quantizer_state, load_quantizer_state, save_quantizer_state


@HOOKS.register_module()
class PTQHook(Hook):
    """Post-training quantization in ``before_test``: wrap sites, assign quantizers, calibrate, then let the
    test loop evaluate the fake-quantized model. ``after_test_epoch`` records the metrics.

    ``method``, ``adapter`` and ``calibration`` left ``None`` are read from the top-level config keys
    ``quant_method``, ``quant_adapter`` and ``quant_calibration``, so that method, model and dataset bases each
    contribute their part by ``_base_`` inheritance (``--cfg-options quant_method.w_bits=4`` works too).

    Args:
        method: PTQ method config, e.g. ``dict(type='MinMax', w_bits=8, a_bits=8)``.
        adapter: model adapter config, e.g. ``dict(type='MMDetSwinAdapter', scope='backbone')``.
        calibration: calibration set, see :class:`~quant_hooks.calibration.CalibrationConfig`.
        load_state: a quantizer state file saved by an earlier run: evaluate from it without calibrating.
        save_state: file name (in the work dir) for the calibrated quantizer state; ``None`` to skip.
        results_file: file name (in the work dir) of the results JSON.
        progress: a progress bar over the batches of each calibration pass (main process only).

    Attributes:
        bypass: when True, ``before_test`` leaves the model in floating point and the metrics of that test run
            are recorded as ``float`` (``tools/quant_test.py`` uses this for the float reference pass).
    """

    priority = 'LOW'

    #: hook argument -> the config key it defaults to
    CFG_KEYS = dict(method='quant_method', adapter='quant_adapter', calibration='quant_calibration')

    def __init__(self, method: dict | None = None, adapter: dict | None = None, calibration: dict | None = None,
                 load_state: str | None = None, save_state: str | None = 'quant_state.pth',
                 results_file: str = 'quant_results.json', progress: bool = True):
        self._explicit = dict(method=method, adapter=adapter, calibration=calibration)
        self.progress = bool(progress)
        self.load_state = load_state
        self.save_state = save_state
        self.results_file = results_file
        self.bypass = False
        self.sites = None
        self.method = self.adapter = None
        self.record: dict = dict(metrics={})

    def settings(self, runner) -> dict:
        """method / adapter / calibration: the hook's arguments, else the config's ``quant_*`` keys."""
        merged = {}
        for arg, key in self.CFG_KEYS.items():
            value = self._explicit[arg]
            if value is None:
                value = runner.cfg.get(key, None)
            merged[arg] = copy.deepcopy(dict(value)) if value else None
        for arg in ('method', 'adapter'):
            if not merged[arg]:
                raise ValueError(f'PTQHook needs `{arg}`: set it in the hook or as `{self.CFG_KEYS[arg]}` in the '
                                 'config')
        calib = merged['calibration']
        if calib and calib.get('dataset') and 'pipeline' not in calib['dataset']:
            # default: the test-time pipeline (deterministic resize, no flip)
            calib['dataset']['pipeline'] = copy.deepcopy(runner.cfg.test_dataloader.dataset.pipeline)
        return merged

    def check_settings(self, runner) -> None:
        """Build the method, the adapter and the calibration settings once, so that bad settings fail before
        any evaluation runs."""
        from ..calibration import CalibrationConfig
        s = self.settings(runner)
        with DefaultScope.overwrite_default_scope('quant_hooks'):
            build_setting(MODEL_ADAPTERS, s['adapter'], 'quant_adapter')
            build_setting(QUANT_METHODS, s['method'], 'quant_method')
        if not self.load_state:
            CalibrationConfig(**self._calibration(s))

    @staticmethod
    def _calibration(settings: dict) -> dict:
        if not settings['calibration']:
            raise ValueError('PTQHook needs `calibration` (or `load_state`): set it in the hook or as '
                             '`quant_calibration` in the config')
        return dict(settings['calibration'])

    def before_test(self, runner) -> None:
        # metrics that compare the two passes (FeatureFidelity) read which one this is
        runner.message_hub.update_info(PHASE_KEY, 'float' if self.bypass else 'quant')
        if self.bypass or self.sites is not None:
            return
        self.quantize(runner)

    def quantize(self, runner) -> None:
        s = self.settings(runner)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.eval()
        with DefaultScope.overwrite_default_scope('quant_hooks'):
            self.adapter = build_setting(MODEL_ADAPTERS, s['adapter'], 'quant_adapter')
            self.method = build_setting(QUANT_METHODS, s['method'], 'quant_method')
        sites = self.adapter.prepare(model)
        start = time.perf_counter()
        if self.load_state:
            self.method.assign(sites)
            meta = load_quantizer_state(model, self.load_state)
            calib = dict(meta.get('calibration', {}), loaded_from=self.load_state)
            summary = {}
        else:
            loader, calib = build_calibration_loader(self._calibration(s))
            summary = self.method.run(model, sites, self._calibration_passes(model, loader))
            # every rank calibrated on the same images; rank 0's state makes them bit-identical
            broadcast_quantizer_state(model)
        seconds = time.perf_counter() - start
        self.sites = sites
        self.record.update(
            method=self.method.describe(), adapter=dict(s['adapter']), num_sites=len(sites),
            sites_by_kind=count_kinds(sites), tensors_by_role=count_roles(sites),
            blocks=sorted({s.block or s.name for s in sites}), calibration=calib,
            quantize_seconds=round(seconds, 3), **summary)
        runner.logger.info(f'PTQHook: {len(sites)} sites quantized by {self.method.describe()["type"]} '
                           f'(W{self.method.w_bits}/A{self.method.a_bits}) in {seconds:.1f}s; '
                           f'by kind {count_kinds(sites)}')
        if self.save_state and not self.load_state and is_main_process():
            path = osp.join(runner.work_dir, self.save_state)
            save_quantizer_state(model, path, meta=dict(method=self.record['method'], calibration=calib),
                                 model_keys=self.method.model_state_keys)
            self.record['state_file'] = path

    def _calibration_passes(self, model, loader):
        """What a method calls to run the calibration set once: the model over every batch, with a progress bar
        per pass."""
        passes = itertools.count(1)
        show = self.progress and is_main_process()

        def run_once() -> int:
            bar = tqdm(loader, desc=f'PTQHook: calibration pass {next(passes)}', unit='batch', leave=False,
                       dynamic_ncols=True, disable=not show)
            try:
                return run_batches(self.adapter, model, bar)
            finally:
                bar.close()
        return run_once

    def after_test_epoch(self, runner, metrics=None) -> None:
        phase = 'float' if self.bypass else 'quant'
        self.record['metrics'][phase] = dict(metrics or {})
        if is_main_process():
            write_json_atomic(osp.join(runner.work_dir, self.results_file), self.record)
