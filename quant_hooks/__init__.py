"""vitq-bench: post-training quantization of vision transformers inside MMDetection and timm.

Components register themselves in the registries of :mod:`quant_hooks.registry`, which import them lazily
on first use (``type='quant_hooks.PTQHook'`` in a config is enough). ``quant_hooks.quantizers`` imports no
mm* package.
"""
__version__ = '0.1.0'
