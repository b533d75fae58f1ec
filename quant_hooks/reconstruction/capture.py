"""Recording a unit's inputs, outputs and tapped tensors while the calibration images run through the model."""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

from torch import nn

from .cache import RecordCache, map_tensors
from .losses import Tap


class StopForward(Exception):
    """Raised by a capture hook once it has what it needs, to skip the rest of the model's forward.

    The calibration loop (:func:`quant_hooks.adapters.base.run_batches`) catches it per batch.
    """


class BatchLoop:
    """The batch a calibration loop that catches :class:`StopForward` is running (``index``, from 0)."""

    def __init__(self):
        self.index = 0


_LOOP: contextvars.ContextVar[BatchLoop | None] = contextvars.ContextVar('calibration_batch_loop', default=None)


@contextlib.contextmanager
def stop_forward_loop() -> Iterator[BatchLoop]:
    """Declare a calibration loop that catches :class:`StopForward` per batch; it advances ``index``."""
    loop = BatchLoop()
    token = _LOOP.set(loop)
    try:
        yield loop
    finally:
        _LOOP.reset(token)


def current_batch() -> int | None:
    """The batch index of the enclosing :func:`stop_forward_loop`, or None outside one (then a hook must not
    raise :class:`StopForward`)."""
    loop = _LOOP.get()
    return None if loop is None else loop.index


def _copy(obj):
    return map_tensors(obj, lambda t: t.detach().clone())


def capture_unit(modules: Sequence[nn.Module], run_calibration: Callable[[], int], cache: RecordCache, tag: str,
                 outputs: bool, taps: Sequence[Tap] = (), stop_early: bool = True) -> int:
    """Run the calibration images once and store one record per call of the unit under ``(tag, index)``.

    A record is ``dict(args=..., kwargs=...)`` (the first module's forward arguments), plus ``out`` (the last
    module's output) and ``taps`` (the tapped arguments, in tap order) when ``outputs`` is set.

    Args:
        modules: the unit's modules, run in sequence.
        run_calibration: runs the calibration images through the whole model.
        cache: where the records go.
        tag: first element of the record keys.
        outputs: record the output and the taps too (else only the inputs, and the unit itself is skipped).
        taps: tensors to record inside the unit.
        stop_early: raise :class:`StopForward` once a record is complete (skips the rest of the model).

    Returns:
        The number of records stored.

    Raises:
        StopForward: ``run_calibration`` does not catch it; call again with ``stop_early=False``.
    """
    state: dict = dict(rec=None, taps={}, n=0)

    def finish():
        rec = state['rec']
        if outputs:
            rec['taps'] = [state['taps'].get(i) for i in range(len(taps))]
        cache.put((tag, state['n']), rec, copy=False)
        state['n'] += 1
        state['rec'], state['taps'] = None, {}
        if stop_early:
            raise StopForward

    def pre_hook(module, args, kwargs):
        state['rec'] = dict(args=_copy(args), kwargs=_copy(kwargs))
        state['taps'] = {}
        if not outputs:
            finish()

    def out_hook(module, args, output):
        if state['rec'] is None:
            return
        state['rec']['out'] = _copy(output)
        finish()

    def tap_hook(i, arg):
        def hook(module, args):
            if state['rec'] is not None and i not in state['taps']:
                state['taps'][i] = args[arg].detach().clone()
        return hook

    handles = [modules[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    if outputs:
        handles.append(modules[-1].register_forward_hook(out_hook))
        handles += [t.module.register_forward_pre_hook(tap_hook(i, t.arg)) for i, t in enumerate(taps)]
    try:
        run_calibration()
    finally:
        for h in handles:
            h.remove()
    return state['n']
