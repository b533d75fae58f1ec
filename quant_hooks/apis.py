"""The quant_test entry point as a function: build the runner, load weights, run float and quantized passes."""
from __future__ import annotations

import copy
import os
import os.path as osp
import time
import uuid

from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for tools)
from mmengine.runner import Runner

from .errors import ConfigError
from .utils.checkpoint import CheckpointError, load_checkpoint

RANDOM_WEIGHTS_NOTE = ('no checkpoint given: the model has RANDOM weights, so its metrics are near zero and only '
                       'show that the pipeline runs; pass a trained checkpoint for meaningful numbers')


def _user_errors():
    from .quantizers import QuantizerError
    return (ConfigError, CheckpointError, QuantizerError, FileNotFoundError)


def _results_errors():
    from .results import RecordError, StoreError
    return (StoreError, RecordError)


#: errors caused by the user's input: command-line tools print them without a traceback
USER_ERRORS = _user_errors() + _results_errors()


def load_config(path: str, cfg_options: dict | None = None, work_dir: str | None = None,
                launcher: str = 'none') -> Config:
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    cfg.load_from = None  # weights are loaded strictly by run_quant_test
    return cfg


def find_ptq_hook(runner: Runner):
    from .hooks import PTQHook
    hooks = [h for h in runner.hooks if isinstance(h, PTQHook)]
    if len(hooks) != 1:
        raise ConfigError(f'the config must add exactly one PTQHook to custom_hooks, found {len(hooks)}: inherit '
                          "configs/_base_/quant/ptq.py or add dict(type='quant_hooks.PTQHook')")
    return hooks[0]


def _set_coco_dump(runner: Runner, phase: str) -> None:
    """Keep each pass's COCO-format detections in WORK_DIR/PHASE/coco.{bbox,segm}.json."""
    for metric in runner.test_evaluator.metrics:
        if hasattr(metric, 'outfile_prefix') and hasattr(metric, 'results2json'):
            metric.outfile_prefix = osp.join(runner.work_dir, phase, 'coco')


def _unwrap(model):
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def build_runner(cfg: Config) -> Runner:
    """``Runner.from_cfg`` under a name of its own.

    mmengine names a runner's logger, message hub, visualizer and default scope after the config file and the
    second the runner starts, and hands out the existing instance of a name already taken. Two runs in one process
    within a second (a suite, a regression check) would then share them: a detector run's default scope
    (``mmdet``) would build the next classifier's pipeline. Unless the config sets ``experiment_name``, the runner
    gets ``<config name>_<random suffix>`` (the config and its hash are unchanged).
    """
    if cfg.get('experiment_name'):
        return Runner.from_cfg(cfg)
    stem = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
    named = copy.deepcopy(cfg)
    named.experiment_name = f'{stem}_{uuid.uuid4().hex[:8]}'
    return Runner.from_cfg(named)


def run_quant_test(cfg: Config, checkpoint: str | None = None, eval_float: bool = True,
                   out: str | None = None, store: str | None = None) -> dict:
    """Evaluate the float model (optional) and the quantized model; returns the full result record.

    The record (see :mod:`quant_hooks.results.schema`) is written to ``WORK_DIR/quant_results.json`` and, when a
    store is configured (``store`` or the config key ``results_store``), appended to that results store. The
    config key ``results_extra`` (a dict) is kept in the record's ``extra`` field. Without ``checkpoint``, the
    config's own ``checkpoint`` key (the trained weights a config ships with) is used.
    """
    from .evaluation import write_json_atomic
    from .results import ResultStore, build_record
    if checkpoint is None and cfg.get('checkpoint'):
        checkpoint = cfg.checkpoint
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise CheckpointError(f'checkpoint file not found: {checkpoint!r}')
    dump = _dump_metric(cfg, out) if out is not None else None  # a bad --out fails before any evaluation
    cfg_dict = cfg.to_dict()
    store = store or cfg.get('results_store', None)
    runner = build_runner(cfg)
    from mmengine.dist import is_main_process
    write_store = bool(store) and is_main_process()
    if write_store:
        ResultStore(store).close()  # a corrupt or locked store fails before any evaluation
    hook = find_ptq_hook(runner)
    hook.check_settings(runner)
    model = _unwrap(runner.model)
    if checkpoint is not None:
        # models that know their own weight format (TimmClassifier: timm state dicts) load it themselves
        loader = getattr(model, 'load_weights', None)
        meta = loader(checkpoint) if callable(loader) else load_checkpoint(model, checkpoint)
        runner.logger.info(f'loaded checkpoint {checkpoint} (strict: every key and shape matched)')
    else:
        meta = None
    weights = checkpoint or getattr(model, 'weights_source', None)
    if weights is None:
        runner.logger.warning(RANDOM_WEIGHTS_NOTE)
    hook.record.update(config=cfg.filename, checkpoint=weights, checkpoint_meta=_short_meta(meta),
                       launcher=cfg.get('launcher', 'none'), world_size=_world_size())
    if weights is None:
        hook.record['note'] = RANDOM_WEIGHTS_NOTE
    eval_seconds = dict(float=None, quant=None)
    if eval_float:
        hook.bypass = True
        _set_coco_dump(runner, 'float')
        eval_seconds['float'] = _timed(lambda: run_test(runner))
        hook.bypass = False
    _set_coco_dump(runner, 'quant')
    if dump is not None:
        runner.test_evaluator.metrics.append(dump)
    quant_seconds = _timed(lambda: run_test(runner)) - hook.record.get('quantize_seconds', 0.0)
    eval_seconds['quant'] = round(quant_seconds, 3)
    if not is_main_process():
        return hook.record
    record = build_record(hook.record, cfg_dict, cfg.filename or '', weights, _timings(hook.record, eval_seconds),
                          extra=cfg_dict.get('results_extra'))
    write_json_atomic(osp.join(runner.work_dir, hook.results_file), record)
    if write_store:
        with ResultStore(store) as result_store:
            result_store.append(record)
        runner.logger.info(f'result record {record["run_id"]} added to the results store {store}')
    return record


def run_test(runner: Runner) -> dict:
    """``runner.test()``, keeping where a hook's ``TypeError`` came from.

    mmengine's ``Runner.call_hook`` re-raises a hook's ``TypeError`` as ``TypeError('<message> in <hook>') from
    None``, which hides the traceback of the original error (the line in the hook, the quantizer or the data
    pipeline that raised it). The original error is still attached as ``__context__``; this shows it again.
    """
    try:
        return runner.test()
    except TypeError as e:
        if e.__suppress_context__ and e.__context__ is not None:
            e.__suppress_context__ = False
        raise


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 3)


def _timings(run: dict, eval_seconds: dict) -> dict:
    """Wall times of a run: calibration (the PTQ hook's time without reconstruction), reconstruction (when the
    method reports ``reconstruction_seconds``) and evaluation (both passes, without quantization)."""
    reconstruction = run.get('reconstruction_seconds')
    quantize = run.get('quantize_seconds')
    calibration = None if quantize is None else round(quantize - (reconstruction or 0.0), 3)
    evaluation = sum(v for v in eval_seconds.values() if v is not None)
    return dict(calibration_s=calibration, reconstruction_s=reconstruction, evaluation_s=round(evaluation, 3),
                evaluation_float_s=eval_seconds['float'], evaluation_quant_s=eval_seconds['quant'])


def _dump_metric(cfg, out):
    if not out.endswith(('.pkl', '.pickle')):
        raise ConfigError(f'--out={out!r} is invalid: the output file must be a .pkl or .pickle file')
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def _short_meta(meta):
    if not meta:
        return None
    return {k: meta[k] for k in ('mmdet_version', 'mmengine_version', 'epoch', 'iter', 'dataset_meta')
            if k in meta and k != 'dataset_meta'}


def _world_size():
    from mmengine.dist import get_world_size
    return get_world_size()


def format_comparison(record: dict) -> str:
    """A float-vs-quantized table of the recorded metrics."""
    metrics = record.get('metrics', {})
    fl, qu = metrics.get('float', {}), metrics.get('quant', {})
    keys = [k for k in list(fl) + [k for k in qu if k not in fl] if isinstance(fl.get(k, qu.get(k)), (int, float))]
    width = max([len(k) for k in keys] + [6])
    lines = [f'{"metric":<{width}}  {"float":>9}  {"quant":>9}  {"delta":>9}']
    for k in keys:
        f, q = fl.get(k), qu.get(k)
        d = f'{q - f:+9.4f}' if f is not None and q is not None else f'{"":>9}'
        lines.append(f'{k:<{width}}  {_fmt(f)}  {_fmt(q)}  {d}')
    method = record.get('method', {})
    lines.append(f'method {method.get("type")} W{method.get("w_bits")}/A{method.get("a_bits")}, '
                 f'{record.get("num_sites")} quantized sites {record.get("sites_by_kind")}')
    if record.get('note'):
        lines.append(f'NOTE: {record["note"]}')
    return '\n'.join(lines)


def _fmt(v):
    return f'{v:9.4f}' if isinstance(v, (int, float)) else f'{"-":>9}'


def init_cpu_distributed(launcher: str, cfg: Config) -> None:
    """For ``--launcher pytorch`` without CUDA: start the gloo group before the Runner (mmengine's own init
    calls ``torch.cuda.set_device``) and wrap the model in DDP without device ids."""
    import torch
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ConfigError(f'--launcher {launcher} needs CUDA; on CPU only --launcher pytorch (gloo) is supported')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dict(backend='gloo'))
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    os.environ.setdefault('LOCAL_RANK', '0')
