# The hook that quantizes the model before the test loop. It reads `quant_method`, `quant_adapter` and
# `quant_calibration` from the config (set by the method, model and dataset bases).
custom_imports = dict(imports=['quant_hooks.registry'], allow_failed_imports=False)
custom_hooks = [dict(type='quant_hooks.PTQHook')]
