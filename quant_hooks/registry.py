"""mmengine registries for everything a config names.

Hooks, datasets, metrics and models are children of mmengine's roots under the scope ``quant_hooks`` (configs
that run in mmdet's scope name them ``quant_hooks.PTQHook``); methods and adapters are roots of their own.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='quant_hooks', locations=['quant_hooks.hooks'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='quant_hooks', locations=['quant_hooks.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='quant_hooks',
                      locations=['quant_hooks.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='quant_hooks', locations=['quant_hooks.evaluation'])
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='quant_hooks', locations=['quant_hooks.models'])
# mmengine's own loops and samplers, reachable from configs whose default scope is quant_hooks
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope='quant_hooks')
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, scope='quant_hooks')

#: PTQ recipes (``type='MinMax'``, ...)
QUANT_METHODS = Registry('quant method', scope='quant_hooks', locations=['quant_hooks.methods'])
#: model adapters (``type='MMDetSwinAdapter'``, ...)
MODEL_ADAPTERS = Registry('model adapter', scope='quant_hooks', locations=['quant_hooks.adapters'])
