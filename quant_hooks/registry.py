"""mmengine registries for everything a config names.

Every mmengine root gets a child under the scope ``quant_hooks`` (as mmdet does for ``mmdet``), so a config with
``default_scope='quant_hooks'`` (classification) finds both this package's components and mmengine's; configs
in mmdet's scope name ours with the prefix, ``type='quant_hooks.PTQHook'``. Methods and adapters are roots of
their own. Components are imported lazily from ``locations`` on first use.
"""
from mmengine import registry as mm
from mmengine.registry import Registry

from .errors import ConfigError
from .quantizers.errors import QuantizerError

HOOKS = Registry('hook', parent=mm.HOOKS, scope='quant_hooks', locations=['quant_hooks.hooks'])
DATASETS = Registry('dataset', parent=mm.DATASETS, scope='quant_hooks', locations=['quant_hooks.datasets'])
TRANSFORMS = Registry('transform', parent=mm.TRANSFORMS, scope='quant_hooks', locations=['quant_hooks.datasets'])
METRICS = Registry('metric', parent=mm.METRICS, scope='quant_hooks', locations=['quant_hooks.evaluation'])
MODELS = Registry('model', parent=mm.MODELS, scope='quant_hooks', locations=['quant_hooks.models'])

# the rest of mmengine's roots, so that the runner builds its usual parts inside this scope
RUNNERS = Registry('runner', parent=mm.RUNNERS, scope='quant_hooks')
RUNNER_CONSTRUCTORS = Registry('runner constructor', parent=mm.RUNNER_CONSTRUCTORS, scope='quant_hooks')
LOOPS = Registry('loop', parent=mm.LOOPS, scope='quant_hooks')
DATA_SAMPLERS = Registry('data sampler', parent=mm.DATA_SAMPLERS, scope='quant_hooks')
FUNCTIONS = Registry('function', parent=mm.FUNCTIONS, scope='quant_hooks')
MODEL_WRAPPERS = Registry('model_wrapper', parent=mm.MODEL_WRAPPERS, scope='quant_hooks')
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=mm.WEIGHT_INITIALIZERS, scope='quant_hooks')
OPTIMIZERS = Registry('optimizer', parent=mm.OPTIMIZERS, scope='quant_hooks')
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=mm.OPTIM_WRAPPERS, scope='quant_hooks')
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', parent=mm.OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='quant_hooks')
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=mm.PARAM_SCHEDULERS, scope='quant_hooks')
EVALUATOR = Registry('evaluator', parent=mm.EVALUATOR, scope='quant_hooks')
TASK_UTILS = Registry('task util', parent=mm.TASK_UTILS, scope='quant_hooks')
VISUALIZERS = Registry('visualizer', parent=mm.VISUALIZERS, scope='quant_hooks')
VISBACKENDS = Registry('vis_backend', parent=mm.VISBACKENDS, scope='quant_hooks')
LOG_PROCESSORS = Registry('log_processor', parent=mm.LOG_PROCESSORS, scope='quant_hooks')
INFERENCERS = Registry('inferencer', parent=mm.INFERENCERS, scope='quant_hooks')

#: PTQ recipes (``type='MinMax'``, ...)
QUANT_METHODS = Registry('quant method', scope='quant_hooks', locations=['quant_hooks.methods'])
#: model adapters (``type='MMDetSwinAdapter'``, ...)
MODEL_ADAPTERS = Registry('model adapter', scope='quant_hooks', locations=['quant_hooks.adapters'])


def build_setting(registry: Registry, cfg: dict, key: str):
    """Build ``cfg`` (the config key ``key``, e.g. ``quant_method``) from ``registry``.

    Raises:
        ConfigError: ``type`` is missing or not registered (the message lists the registered names), or the
            component refuses an argument or a value (the message names ``key`` and the component's error).
        QuantizerError: a quantizer setting (bits, granularity ...) is invalid.
    """
    registry.import_from_location()
    kind = cfg.get('type') if isinstance(cfg, dict) else None
    if not isinstance(kind, (str, type)) or (isinstance(kind, str) and registry.get(kind) is None):
        raise ConfigError(f'{key}.type={kind!r} is invalid: allowed values are {sorted(registry.module_dict)}')
    try:
        return registry.build(dict(cfg))
    except QuantizerError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f'{key} ({kind}): {e}') from e
