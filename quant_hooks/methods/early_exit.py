"""Calibration passes that skip the part of the model after the quantizers still calibrating."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from ..quantizers import Quantizer
from ..reconstruction.capture import StopForward, current_batch


class EarlyExitPasses:
    """``run_once`` for :func:`~quant_hooks.quantizers.run_calibration_passes` that ends a batch's forward once the
    quantizers still calibrating have seen it.

    A pass after the first serves the quantizers whose search needs more data (candidate scoring, exact tails);
    when they sit early in the model, the rest of the forward is wasted. The first pass counts how often each
    quantizer is called in each batch; in later passes a hook on every quantizer still observing raises
    :class:`~quant_hooks.reconstruction.StopForward` once each of them has had all its calls of the current batch.
    The quantizers see exactly the data of a whole pass. Only inside a calibration loop that catches
    ``StopForward`` per batch (:func:`~quant_hooks.adapters.run_batches`); any other loop runs whole passes.

    Args:
        quantizers: the quantizers being calibrated.
        run_once: one pass over the calibration data; returns the number of batches.
    """

    def __init__(self, quantizers: Sequence[Quantizer], run_once: Callable[[], int]):
        self.quantizers = list(quantizers)
        self.run_once = run_once
        #: per quantizer, batch index -> calls in the first pass (None: not counted, passes run whole)
        self.calls: list[dict[int, int]] | None = None
        self.passes = 0

    def __call__(self) -> int:
        self.passes += 1
        if self.passes == 1:
            return self._count_calls()
        active = [i for i, q in enumerate(self.quantizers) if q.observing]
        if self.calls is None or not active:
            return self.run_once()
        return self._run_stopping(active)

    def _count_calls(self) -> int:
        calls: list[dict[int, int]] = [defaultdict(int) for _ in self.quantizers]

        def hook(i):
            def fn(module, args, output):
                b = current_batch()
                if b is not None:
                    calls[i][b] += 1
            return fn

        handles = [q.register_forward_hook(hook(i)) for i, q in enumerate(self.quantizers)]
        try:
            n = self.run_once()
        finally:
            for h in handles:
                h.remove()
        self.calls = [dict(c) for c in calls] if any(calls) else None
        return n

    def _run_stopping(self, active: list[int]) -> int:
        state = dict(batch=None, remaining=0, seen={})

        def hook(i):
            def fn(module, args, output):
                b = current_batch()
                if b is None:
                    return
                if b != state['batch']:
                    state['batch'], state['seen'] = b, {}
                    state['remaining'] = sum(self.calls[j].get(b, 0) for j in active)
                seen = state['seen'][i] = state['seen'].get(i, 0) + 1
                if seen <= self.calls[i].get(b, 0):
                    state['remaining'] -= 1
                    if state['remaining'] == 0:
                        raise StopForward
            return fn

        handles = [self.quantizers[i].register_forward_hook(hook(i)) for i in active]
        try:
            return self.run_once()
        finally:
            for h in handles:
                h.remove()
